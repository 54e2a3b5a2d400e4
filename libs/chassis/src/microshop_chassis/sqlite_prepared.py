"""The statements a service runs again and again, compiled by SQLAlchemy once and then run straight
on the process's sqlite3 connection.

A checkout's statements are built once (module constants with bind parameters), so all SQLAlchemy
still does for each execution is its execution machinery: the compiled-cache look-up, an
execution context, bind and result processing through a ``CursorResult``. Measured here, that is
~20 µs around a ~5 µs SQLite statement, about a third of a short unit of work
(docs/performance.md, "Prepared statements"). This module keeps SQLAlchemy's part where it
matters (the SQL it compiles, its types' bind and result processors, its ``Row`` and result API,
its exception classes) and leaves the rest out.

Only what has the same meaning either way takes this path; anything else goes through the
``Session`` as before:

- a Core statement (an ORM one needs the ORM's loading), seen twice: built once and reused, so a
  statement built on each call (a cold path) is never compiled here for nothing;
- compiled with no Python-side defaults to run, no expanding or literal-rendered parameters, no
  RETURNING, no escaped parameter names and no callable values.

Nothing process-wide: a ``PreparedStatements`` belongs to one ``Database``.
"""

from __future__ import annotations

import sqlite3
import weakref
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql.base import Executable

_FROM_PARAMS = object()  # a position filled from the caller's parameters


class RowsResult(IteratorResult):
    """A SELECT's rows, with the ``Result`` API the services use (``first``, ``scalars``, ...)."""


class WriteResult:
    """What an INSERT, UPDATE or DELETE without RETURNING answers: how many rows it touched."""

    __slots__ = ("rowcount",)

    def __init__(self, rowcount: int) -> None:
        self.rowcount = rowcount

    def close(self) -> None:
        pass


class _Prepared:
    __slots__ = ("sql", "positions", "metadata", "row_processors")

    def __init__(self, sql: str, positions: tuple, metadata: SimpleResultMetaData | None,
                 row_processors: tuple | None) -> None:
        self.sql = sql
        # (parameter key, bind processor, constant): the constant (already processed) when the value
        # is the statement's own, else _FROM_PARAMS.
        self.positions = positions
        self.metadata = metadata  # None for a statement that returns no rows
        self.row_processors = row_processors  # None when no column needs converting

    def arguments(self, params: dict) -> list:
        return [constant if constant is not _FROM_PARAMS else params[key] if process is None
                else process(params[key]) for key, process, constant in self.positions]


class PreparedStatements:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        # statement -> {parameter keys: _Prepared or None (not eligible)}; weak, so a statement built
        # for one call leaves with it. A statement's first sighting only marks it as seen.
        self._by_statement: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def prepared(self, statement: Any, params: Any) -> _Prepared | None:
        """The compiled form of ``statement`` for these parameters' keys, or None: run it through
        the Session."""
        if isinstance(params, list):
            keys = tuple(params[0]) if params else ()
        elif params is None:
            keys = ()
        elif isinstance(params, dict):
            keys = tuple(params)
        else:
            return None
        try:
            forms = self._by_statement.get(statement)
        except TypeError:  # not weak-referenceable: a text() clause, a string
            return None
        if forms is None:
            if (isinstance(statement, Executable) and (statement.is_select or statement.is_dml)
                    and not statement._propagate_attrs):
                self._by_statement[statement] = {}
            return None
        try:
            return forms[keys]
        except KeyError:
            form = forms[keys] = self._compile(statement, keys, many=isinstance(params, list))
            return form

    def _compile(self, statement: Any, keys: tuple, *, many: bool) -> _Prepared | None:
        if statement._execution_options:
            return None
        compiled = statement.compile(dialect=self.dialect, column_keys=list(keys), for_executemany=many)
        if (compiled.positiontup is None or compiled.insert_prefetch or compiled.update_prefetch
                or compiled.post_compile_params or compiled.literal_execute_params
                or compiled.escaped_bind_names or compiled.effective_returning):
            return None
        bind_by_name = {name: bind for bind, name in compiled.bind_names.items()}
        processors = compiled._bind_processors
        positions = []
        for name in compiled.positiontup:
            bind = bind_by_name[name]
            if bind.callable is not None:
                return None
            process = processors.get(name)
            # The caller's value wins over the statement's own, by the bind's key then its name,
            # as in SQLAlchemy's Compiled.construct_params.
            key = bind.key if bind.key in keys else name if name in keys else None
            if key is not None:
                positions.append((key, process, _FROM_PARAMS))
            elif bind.required:
                return None  # let SQLAlchemy say which parameter is missing
            else:
                value = bind.effective_value
                positions.append((None, None, value if process is None else process(value)))
        metadata = row_processors = None
        if statement.is_select:
            columns = compiled._result_columns
            metadata = SimpleResultMetaData([column.keyname for column in columns])
            converters = tuple(column.type._cached_result_processor(self.dialect, None) for column in columns)
            row_processors = converters if any(converters) else None
        return _Prepared(compiled.string, tuple(positions), metadata, row_processors)

    def run(self, connection: sqlite3.Connection, prepared: _Prepared, params: Any) -> RowsResult | WriteResult:
        try:
            many = isinstance(params, list)
            arguments = [prepared.arguments(one) for one in params] if many else prepared.arguments(params or {})
        except Exception as exc:  # a type refusing a value (a naive datetime...), as SQLAlchemy says it
            raise StatementError(f"({type(exc).__module__}.{type(exc).__name__}) {exc}", prepared.sql, params,
                                 exc) from exc
        try:
            cursor = (connection.executemany if many else connection.execute)(prepared.sql, arguments)
            if prepared.metadata is None:
                return WriteResult(cursor.rowcount)
            rows = cursor.fetchall()
        except sqlite3.Error as exc:
            # The exception classes the services catch (IntegrityError for a duplicate key, ...).
            raise DBAPIError.instance(prepared.sql, arguments, exc, sqlite3.Error, dialect=self.dialect,
                                      ismulti=many) from exc
        converters = prepared.row_processors
        if converters is not None:
            rows = [tuple(value if convert is None else convert(value)
                          for convert, value in zip(converters, row, strict=True)) for row in rows]
        return RowsResult(prepared.metadata, iter(rows))
