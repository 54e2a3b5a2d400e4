from pathlib import Path

from pydantic_settings import SettingsConfigDict

from microshop_chassis.settings import ServiceSettings


class ReportsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MICROSHOP_REPORTS_", extra="ignore", populate_by_name=True)

    service_name: str = "reports"
    port: int = 8106
    # The DuckDB file holding the read model. Empty means <data_dir>/reports.duckdb.
    duckdb_path: str = ""
    # DuckDB's own cap on its buffers; the process budget is < 80 MB RSS in all.
    duckdb_memory_limit: str = "64MB"
    # Live events wait up to this long (from the first) to be applied together: DuckDB's cost is
    # per transaction, so a longer wait is cheaper and leaves the report that much staler (a
    # second: reports' CPU per checkout halves against 0.25 s, docs/performance.md).
    batch_linger_seconds: float = 1.0
    # Live events fetched (and applied in one DuckDB transaction) at most at once. The cost is per
    # transaction; a batch fills within the linger above ~1,000 events/s.
    batch_size: int = 256
    # Events applied per DuckDB transaction while replaying the stream.
    replay_batch_size: int = 256

    def resolved_duckdb_path(self) -> Path:
        path = Path(self.duckdb_path) if self.duckdb_path else self.data_dir / "reports.duckdb"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
