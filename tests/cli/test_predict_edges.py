"""`mserve predict` applies the server's input policy locally."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import Cli, one_line_error


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_local_predict_refuses_nan_and_infinity_in_json_as_the_server_does(
    cli: Cli, published_iris: Path, tmp_path: Path, constant: str
) -> None:
    inline = cli("predict", "iris", "--input", f"[[{constant}, 3.5, 1.4, 0.2]]")
    one_line_error(inline, 1, f"--input is not valid JSON ({constant} is no JSON number")
    document = tmp_path / "rows.json"
    document.write_text(f'{{"input": [[5.1, {constant}, 1.4, 0.2]]}}')
    from_file = cli("predict", "iris", "--input", f"@{document}")
    one_line_error(from_file, 1, f"rows.json is not valid JSON ({constant} is no JSON number")
