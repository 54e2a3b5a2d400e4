"""Login and registration limits: a sliding window per key that counts an attempt before the
password is hashed and hands it back when the login succeeds; the client address behind the
gateway."""

import ipaddress

import pytest
from microshop_users.throttle import AccessLimits, Policy, SlidingWindow, Throttled, client_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits(clock, account=5, address=30, register=3) -> AccessLimits:
    return AccessLimits(login_account=Policy("login-account", account, 60),
                        login_address=Policy("login-address", address, 60),
                        register_address=Policy("register-address", register, 60), clock=clock)


def test_the_window_slides_and_says_when_a_slot_frees():
    clock = Clock()
    window = SlidingWindow(Policy("p", 2, 60), clock=clock)
    window.acquire("k")
    clock.now += 20
    window.acquire("k")
    with pytest.raises(Throttled) as throttled:
        window.acquire("k")
    assert throttled.value.retry_after == 40
    assert throttled.value.headers() == {"Retry-After": "40", "RateLimit-Policy": '"p";q=2;w=60',
                                         "RateLimit": '"p";r=0;t=40'}
    window.acquire("other")  # keys are counted apart
    clock.now += 40
    window.acquire("k")  # the first attempt left the window


def test_failed_logins_lock_the_account_even_for_the_right_password_until_the_window_moves():
    clock = Clock()
    access = limits(clock)
    for _ in range(5):
        access.login(email="ada@example.com", address="10.0.0.1")  # failed: never released
    with pytest.raises(Throttled) as throttled:
        access.login(email="ada@example.com", address="10.0.0.2")
    assert throttled.value.policy.name == "login-account"
    access.login(email="bob@example.com", address="10.0.0.1").release()  # other accounts are not locked
    clock.now += 60
    access.login(email="ada@example.com", address="10.0.0.2").release()


def test_successful_logins_do_not_count():
    access = limits(Clock(), account=2, address=2)
    for _ in range(10):
        access.login(email="ada@example.com", address="10.0.0.1").release()


def test_failed_logins_from_one_address_are_limited_across_accounts():
    access = limits(Clock(), address=3)
    for n in range(3):
        access.login(email=f"u{n}@example.com", address="10.0.0.1")
    with pytest.raises(Throttled) as throttled:
        access.login(email="u9@example.com", address="10.0.0.1")
    assert throttled.value.policy.name == "login-address"
    # The refused attempt did not count against the account it named.
    for n in range(5):
        access.login(email="u9@example.com", address=f"10.0.1.{n}")


def test_registrations_per_address():
    access = limits(Clock(), register=2)
    access.register(address="10.0.0.1")
    access.register(address="10.0.0.1")
    with pytest.raises(Throttled):
        access.register(address="10.0.0.1")
    access.register(address="10.0.0.2")


def test_idle_keys_are_swept():
    clock = Clock()
    window = SlidingWindow(Policy("p", 1, 60), clock=clock, sweep_at_keys=10)
    for n in range(10):
        window.acquire(f"k{n}")
    clock.now += 61
    window.acquire("new")
    assert len(window._log) == 1  # noqa: SLF001


LOOPBACK = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")]


@pytest.mark.parametrize(("peer", "forwarded_for", "expected"), [
    ("127.0.0.1", "203.0.113.9", "203.0.113.9"),  # the gateway appended the client's address
    ("127.0.0.1", "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # what the client wrote itself is ignored
    ("::1", "2001:db8::1", "2001:db8::1"),
    ("198.51.100.7", "203.0.113.9", "198.51.100.7"),  # not a trusted proxy: its header is ignored
    ("127.0.0.1", "", "127.0.0.1"),
    ("127.0.0.1", "not-an-address", "127.0.0.1"),
    (None, "203.0.113.9", "unknown"),
])
def test_the_client_address(peer, forwarded_for, expected):
    assert client_address(peer, forwarded_for, LOOPBACK) == expected
