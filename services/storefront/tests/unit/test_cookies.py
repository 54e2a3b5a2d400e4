"""The cart and session cookies, and the CSRF token bound to the session."""

import os
import stat

import pytest

from microshop_storefront.cookies import (
    MAX_CART_LINES,
    MAX_QUANTITY,
    CookieCodec,
    KeyFileError,
    Session,
    add_to_cart,
    cookie_key,
    csrf_token,
    csrf_valid,
    read_cart,
    set_quantity,
)

KEY = b"k" * 32


def test_a_signed_cart_reads_back_and_a_tampered_or_foreign_one_reads_as_empty():
    codec = CookieCodec(KEY, "cart")
    text = codec.dumps({"MUG-1": 2})
    assert read_cart(codec.loads(text, max_age=60)) == {"MUG-1": 2}
    tampered = text.replace(text.split(".")[0], CookieCodec(KEY, "cart").dumps({"MUG-1": 99}).split(".")[0])
    assert codec.loads(tampered, max_age=60) is None
    assert CookieCodec(b"other" * 8, "cart").loads(text, max_age=60) is None
    assert CookieCodec(KEY, "session").loads(text, max_age=60) is None  # a cart is not a session
    assert codec.loads("garbage", max_age=60) is None and codec.loads(None, max_age=60) is None


def test_an_expired_cookie_reads_as_absent(monkeypatch):
    codec = CookieCodec(KEY, "session")
    text = codec.dumps({"sid": "a"})
    import itsdangerous.timed

    real = itsdangerous.timed.TimestampSigner.get_timestamp
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: real(self) + 3601)
    assert codec.loads(text, max_age=3600) is None


def test_the_cart_keeps_only_well_formed_lines():
    assert read_cart({"MUG-1": 2, "bad sku": 1, "TEE": 0, "PEN": 1000, "CUP": "3", "OK": True}) == {"MUG-1": 2}
    assert read_cart(["not", "a", "dict"]) == {}


def test_adding_adds_up_to_the_cap_and_refuses_bad_input():
    cart = add_to_cart({}, "MUG-1", 2)
    assert add_to_cart(cart, "MUG-1", 3) == {"MUG-1": 5}
    assert add_to_cart(cart, "MUG-1", MAX_QUANTITY) == {"MUG-1": MAX_QUANTITY}
    for sku, quantity in (("MUG-1", 0), ("MUG-1", -1), ("../x", 1), ("", 1), ("MUG-1", MAX_QUANTITY + 1)):
        with pytest.raises(ValueError):
            add_to_cart(cart, sku, quantity)
    full = {f"SKU-{n}": 1 for n in range(MAX_CART_LINES)}
    with pytest.raises(ValueError, match="at most"):
        add_to_cart(full, "ONE-MORE", 1)


def test_setting_a_quantity_to_zero_removes_the_line():
    assert set_quantity({"A": 1, "B": 2}, "A", 0) == {"B": 2}
    assert set_quantity({"A": 1}, "A", 4) == {"A": 4}
    assert set_quantity({"A": 1}, "B", 4) == {"A": 1}  # not in the cart: nothing added by an update


def test_the_csrf_token_is_bound_to_the_session_and_a_login_changes_it():
    session = Session()
    token = csrf_token(KEY, session.sid)
    assert csrf_valid(KEY, session.sid, token)
    assert not csrf_valid(KEY, session.sid, None) and not csrf_valid(KEY, session.sid, "")
    assert not csrf_valid(KEY, Session().sid, token)  # another session's token
    assert not csrf_valid(b"x" * 32, session.sid, token)
    session.log_in(token="jwt", expires_in=3600, email="a@example.com", name="A", role="customer")
    assert not csrf_valid(KEY, session.sid, token)  # the session before the login is not this one


def test_a_session_round_trips_and_forgets_its_token_at_logout():
    session = Session()
    session.log_in(token="jwt", expires_in=3600, email="a@example.com", name="A", role="admin")
    session.flash("ok", "hello")
    again = Session.from_cookie(session.to_cookie())
    assert again.logged_in and again.is_admin and again.email == "a@example.com" and not again.changed
    assert again.take_flashes() == [["ok", "hello"]] and again.changed
    again.log_out()
    assert not again.logged_in and "tok" not in again.to_cookie()
    expired = Session.from_cookie({**session.to_cookie(), "exp": 1})
    assert not expired.logged_in


def test_the_generated_key_is_a_private_file_kept_across_restarts(tmp_path):
    first = cookie_key("", tmp_path / "keys")
    assert cookie_key("", tmp_path / "keys") == first and len(first) >= 32
    path = tmp_path / "keys" / "cookie-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert cookie_key("configured", tmp_path / "keys") == b"configured"
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError):
        cookie_key("", tmp_path / "keys")
