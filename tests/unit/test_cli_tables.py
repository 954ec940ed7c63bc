"""Tables printed to a pipe keep their whole rows (scripts read them with awk and grep)."""

from __future__ import annotations

import pytest

from faasd_py.cli._app import add_row, new_table, print_table


def test_a_wide_table_piped_is_not_cut_at_80_columns(capsys: pytest.CaptureFixture[str]) -> None:
    table = new_table(*(f"column {n}" for n in range(8)))
    add_row(table, *(f"value-{n}-" + "x" * 12 for n in range(8)))
    print_table(table)
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) > 80
    assert "value-7-" + "x" * 12 in lines[-1]
