"""Alembic environment: runs on the connection the gateway hands over."""

from alembic import context
from sqlalchemy import create_engine

from gateway.store.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # `alembic` on the command line: -x url=...
        url = context.get_x_argument(as_dictionary=True).get("url", "sqlite:///potluck.db")
        with create_engine(url).begin() as conn:
            _configure(conn)
    else:
        _configure(connection)


def _configure(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
