from microshop_users.security import hash_password, verify_password


async def test_password_hash_is_argon2id_and_verifies_only_the_right_password():
    hashed = await hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert await verify_password(hashed, "correct horse")
    assert not await verify_password(hashed, "wrong horse")


async def test_unknown_account_never_verifies():
    assert not await verify_password(None, "not-a-real-password")
