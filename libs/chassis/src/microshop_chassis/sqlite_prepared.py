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
- compiled with no Python-side defaults to run, no literal-rendered parameters, no RETURNING but
  the statement's own for one row's parameters, no escaped parameter names and no callable values.
  An expanding parameter (``IN`` a list) gets one SQL text per list length, as SQLAlchemy expands it.

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
    """A SELECT's or a RETURNING's rows, with the ``Result`` API the services use (``first``,
    ``scalars``, ...), and for RETURNING how many rows were touched."""

    rowcount = -1


class WriteResult:
    """What an INSERT, UPDATE or DELETE without RETURNING answers: how many rows it touched."""

    __slots__ = ("rowcount",)

    def __init__(self, rowcount: int) -> None:
        self.rowcount = rowcount


class _Prepared:
    __slots__ = ("sql", "positions", "metadata", "row_processors")

    def __init__(self, sql: str, positions: tuple, metadata: SimpleResultMetaData | None,
                 row_processors: tuple | None) -> None:
        self.sql = sql
        # (parameter key, index in its list or None, bind processor, constant): the constant
        # (already processed) when the value is the statement's own, else _FROM_PARAMS.
        self.positions = positions
        self.metadata = metadata  # None for a statement that returns no rows
        self.row_processors = row_processors  # None when no column needs converting

    def arguments(self, params: dict) -> list:
        arguments = []
        for key, index, process, constant in self.positions:
            if constant is not _FROM_PARAMS:
                arguments.append(constant)
                continue
            value = params[key] if index is None else params[key][index]
            arguments.append(value if process is None else process(value))
        return arguments


class _Expanding:
    """A statement with expanding parameters (``IN`` a list): one SQL text per list length."""

    __slots__ = ("compiled", "keys", "list_keys", "by_lengths")

    def __init__(self, compiled: Any, keys: tuple, list_keys: tuple) -> None:
        self.compiled = compiled
        self.keys = keys
        self.list_keys = list_keys
        self.by_lengths: dict[tuple, _Prepared | None] = {}


class PreparedStatements:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        # statement -> {parameter keys: _Prepared, _Expanding, or None (not eligible)}; weak, so a
        # statement built for one call leaves with it. A statement's first sighting only marks it.
        self._by_statement: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def prepared(self, statement: Any, params: Any) -> _Prepared | None:
        """The compiled form of ``statement`` for these parameters, or None: run it through the
        Session."""
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
            form = forms[keys]
        except KeyError:
            form = forms[keys] = self._compile(statement, keys, many=isinstance(params, list))
        if form.__class__ is not _Expanding:
            return form
        lengths = tuple(len(params[key]) for key in form.list_keys)
        try:
            return form.by_lengths[lengths]
        except KeyError:
            prepared = form.by_lengths[lengths] = self._expand(statement, form, params)
            return prepared

    def _compile(self, statement: Any, keys: tuple, *, many: bool) -> _Prepared | _Expanding | None:
        if statement._execution_options:
            return None
        compiled = statement.compile(dialect=self.dialect, column_keys=list(keys), for_executemany=many)
        # RETURNING only as the statement asks it of one row's parameters: for many, SQLAlchemy
        # batches the rows into one statement ("insertmanyvalues"), and a RETURNING it adds itself
        # serves its own bookkeeping.
        if (compiled.positiontup is None or compiled.insert_prefetch or compiled.update_prefetch
                or compiled.literal_execute_params or compiled.escaped_bind_names
                or (compiled.effective_returning and (many or not statement.is_dml or not statement._returning))):
            return None
        if compiled.post_compile_params:
            list_keys = tuple(bind.key for bind in compiled.post_compile_params)
            if many or not all(bind.expanding and not bind.literal_execute and key in keys
                               for bind, key in zip(compiled.post_compile_params, list_keys, strict=True)):
                return None
            return _Expanding(compiled, keys, list_keys)
        return self._prepare(statement, compiled, keys, compiled.string, compiled.positiontup, {}, {})

    def _expand(self, statement: Any, form: _Expanding, params: dict) -> _Prepared | None:
        """SQLAlchemy's own expansion of the lists, for these lengths; the values are bound at each run."""
        compiled = form.compiled
        expanded = compiled._process_parameters_for_postcompile(compiled.construct_params(params),
                                                                _populate_self=False)
        in_list = {name: (key, index) for key, names in expanded.parameter_expansion.items()
                   for index, name in enumerate(names)}
        return self._prepare(statement, compiled, form.keys, expanded.statement, expanded.positiontup, in_list,
                             expanded.processors)

    def _prepare(self, statement: Any, compiled: Any, keys: tuple, sql: str, positiontup: Any,
                 in_list: dict, list_processors: dict) -> _Prepared | None:
        bind_by_name = {name: bind for bind, name in compiled.bind_names.items()}
        processors = compiled._bind_processors
        positions = []
        for name in positiontup:
            if name in in_list:
                key, index = in_list[name]
                positions.append((key, index, list_processors.get(name), _FROM_PARAMS))
                continue
            bind = bind_by_name[name]
            if bind.callable is not None:
                return None
            process = processors.get(name)
            # The caller's value wins over the statement's own, by the bind's key then its name,
            # as in SQLAlchemy's Compiled.construct_params.
            key = bind.key if bind.key in keys else name if name in keys else None
            if key is not None:
                positions.append((key, None, process, _FROM_PARAMS))
            elif bind.required:
                return None  # let SQLAlchemy say which parameter is missing
            else:
                value = bind.effective_value
                positions.append((None, None, None, value if process is None else process(value)))
        metadata = row_processors = None
        if statement.is_select or compiled.effective_returning:
            columns = compiled._result_columns
            metadata = SimpleResultMetaData([column.keyname for column in columns])
            converters = tuple(column.type._cached_result_processor(self.dialect, None) for column in columns)
            row_processors = converters if any(converters) else None
        return _Prepared(sql, tuple(positions), metadata, row_processors)

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
        result = RowsResult(prepared.metadata, iter(rows))
        if cursor.rowcount >= 0:
            result.rowcount = len(rows)  # sqlite3 counts a RETURNING's rows as they are fetched
        return result
