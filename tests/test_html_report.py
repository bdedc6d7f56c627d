"""The self-contained HTML report: inlined figures, escaped text, tables as rendered by pandas."""

from __future__ import annotations

import base64
import re

import pandas as pd

from skin_core.reporting import Section, render_report

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


def test_figures_are_inlined_byte_for_byte_and_text_is_escaped() -> None:
    table = pd.DataFrame({"accuracy": [0.5, 0.25]}, index=["baseline", "AT <layer3>"])
    page = render_report("Report & co", "profile demo", [
        Section("Results", "note <b>", tables={"val": table}, figures={"pr <curves>": PNG})])
    inlined = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert [base64.b64decode(data) for data in inlined] == [PNG]
    assert "Report &amp; co" in page and "note &lt;b&gt;" in page and "pr &lt;curves&gt;" in page
    assert "AT &lt;layer3&gt;" in page and "<b>" not in page
    assert "0.500" in page and "0.250" in page
    assert "http" not in page  # nothing to fetch: the file stands alone
