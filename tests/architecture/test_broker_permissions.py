"""The broker permissions (microshop_chassis.broker_auth) name what the services really consume:
a consumer the table forgets would be refused by the broker at its first subscription."""

from microshop_chassis.broker_auth import CONSUMES, DURABLES
from microshop_chassis.events import subjects_of
from microshop_notifications.bootstrap import build as build_notifications
from microshop_notifications.settings import NotificationsSettings
from microshop_reports.bootstrap import build as build_reports
from microshop_reports.settings import ReportsSettings


def test_every_consumer_is_in_the_broker_permissions(tmp_path):
    hosts = {"notifications": build_notifications(NotificationsSettings(data_dir=tmp_path, service_secret="s")),
             "reports": build_reports(ReportsSettings(data_dir=tmp_path, service_secret="s"))}
    for name, host in hosts.items():
        consumers = host.messaging._consumers
        assert [consumer.durable for consumer in consumers] == [DURABLES[name]], name
        assert sorted(consumers[0].subjects) == sorted(subjects_of(*CONSUMES[name])), name
    assert set(CONSUMES) == set(hosts)
