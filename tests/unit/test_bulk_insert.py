"""Multi-row INSERTs (etl/core/mirror/bulk.py) on a real database: few statement shapes, wide tables."""

from __future__ import annotations

import sqlalchemy as sa

from etl.core.mirror.bulk import inserter, rows_per_statement, statement_spans
from etl.core.mirror.db import open_engine


def test_statements_take_full_chunks_then_powers_of_two():
    assert statement_spans(0, 256) == []
    assert statement_spans(1000, 256) == [(0, 256), (256, 512), (512, 768), (768, 896), (896, 960), (960, 992),
                                           (992, 1000)]
    sizes = {stop - start for n in range(1, 3000) for start, stop in statement_spans(n, 256)}
    assert sizes == {1, 2, 4, 8, 16, 32, 64, 128, 256}  # nine statement texts a table, whatever the batches
    assert rows_per_statement(40) == 256
    assert rows_per_statement(300) == 64 and 64 * 300 <= 32_766
    assert rows_per_statement(40_000) == 1


def _wide_table(columns: int) -> sa.Table:
    return sa.Table("wide", sa.MetaData(), sa.Column("id", sa.BigInteger, primary_key=True),
                    *(sa.Column(f"f{n}", sa.Text) for n in range(columns - 1)))


def test_a_wide_table_is_written_within_the_parameter_limit(db_url):
    table = _wide_table(400)  # 200 rows a statement were 80,000 parameters: PostgreSQL refuses over 65,535
    engine = open_engine(db_url)
    table.metadata.create_all(engine)
    rows = [(n, *(f"v{n}.{k}" for k in range(399))) for n in range(1, 1001)]
    insert = inserter(table, tuple(c.name for c in table.columns), "skip")
    try:
        with engine.begin() as conn:
            for batch in (rows[:333], rows[333:700], rows[700:]):
                insert.insert(conn, batch)
            insert.insert(conn, rows[:10])  # taken keys are skipped
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 1000
            assert conn.execute(sa.select(table.c.f398).where(table.c.id == 777)).scalar_one() == "v777.398"
    finally:
        table.metadata.drop_all(engine)
        engine.dispose()
