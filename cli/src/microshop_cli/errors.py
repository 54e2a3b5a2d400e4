"""Errors the launcher reports to its user (the CLI prints them; no traceback)."""


class MicroshopError(Exception):
    """A failure with a message meant for the person running ``microshop``."""


class AlreadyRunningError(MicroshopError):
    pass


class PortInUseError(MicroshopError):
    def __init__(self, port: int, component: str, detail: str = "is already in use") -> None:
        self.port = port
        self.component = component
        super().__init__(f"port {port} ({component}) {detail}")


class StartupError(MicroshopError):
    pass


class SeedError(MicroshopError):
    pass
