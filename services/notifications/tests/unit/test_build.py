"""The composition root: nothing process-wide, so two notifications services build side by side."""

from microshop_chassis.testing import TokenMint
from microshop_notifications.bootstrap import build
from microshop_notifications.service import Notifications
from microshop_notifications.settings import NotificationsSettings


async def test_two_instances_build_in_one_process_each_with_its_own_parts(tmp_path, fake_mail):
    first, second = (
        build(NotificationsSettings(data_dir=tmp_path / name), verifier=TokenMint().verifier(), mail=fake_mail())
        for name in ("first", "second")
    )
    try:
        assert first.metrics.registry is not second.metrics.registry
        assert first.app.provided[Notifications] is not second.app.provided[Notifications]
        for host in (first, second):
            # Each counts its own deliveries (declared before any was attempted).
            assert "notifications_delivery_attempts" in host.metrics.render()[0].decode()
            assert {"/notifications", "/notifications/{notification_id}"} <= set(host.app.openapi()["paths"])
    finally:
        for host in (first, second):
            await host.app.provided[Notifications].db.dispose()
