async def test_password_hash_is_argon2id_and_verifies_only_the_right_password(passwords):
    hashed = await passwords.hash("correct horse")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert await passwords.verify(hashed, "correct horse")
    assert not await passwords.verify(hashed, "wrong horse")


async def test_unknown_account_never_verifies(passwords):
    assert not await passwords.verify(None, "not-a-real-password")
