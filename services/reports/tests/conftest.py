import nats
import pytest

from microshop_chassis.broker import ensure_stream
from microshop_chassis.testing import ApiClient, NatsServer, RunningApp, TokenMint
from microshop_reports.bootstrap import build
from microshop_reports.settings import ReportsSettings


@pytest.fixture
def nats_of_own(tmp_path):
    """A nats-server for this test alone: the figures are absolute, so no other test's events."""
    store = tmp_path / "nats"
    store.mkdir()
    server = NatsServer(store).start()
    yield server
    server.stop()


@pytest.fixture
def settings(nats_of_own, tmp_path) -> ReportsSettings:
    return ReportsSettings(nats_url=nats_of_own.url, data_dir=tmp_path / "data")


@pytest.fixture
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture
def serve(settings, mint):
    """Serve a fresh app over the same DuckDB file: ``async with serve() as running``. Call it
    again after the first exits to restart the service."""

    def start() -> RunningApp:
        return RunningApp(build(settings, verifier=mint.verifier()).app)

    return start


@pytest.fixture
async def reports(serve):
    async with serve() as running:
        yield running


@pytest.fixture
def admin(mint) -> str:
    return mint.token("admin-1", role="admin")


@pytest.fixture
def api(reports, admin) -> ApiClient:
    return ApiClient(reports.url, token=admin)


@pytest.fixture
async def js(nats_of_own):
    """A JetStream context on the test's server, with the microshop streams in place."""
    nc = await nats.connect(nats_of_own.url)
    context = nc.jetstream()
    await ensure_stream(context)
    yield context
    await nc.close()
