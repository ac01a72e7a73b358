"""The supervisor's reading of stage log lines (supervisor/runfiles.py `log_fields`), as ws-ingress's KeyValueLogHandler
writes them: fields in any order, quoted values with their escapes undone."""

import sys

from supervisor_helpers import REPO

sys.path.insert(0, str(REPO))
from supervisor.runfiles import log_fields  # noqa: E402


def test_fields_in_any_order_with_quotes_and_escapes_undone():
    line = ('time=2026-11-24T19:33:01.123Z level=ERROR stage=ws-ingress instance=0 msg="TLS reload failed" '
            'error="cannot read \\"tls/server.pem\\": no such file\\r\\n" file=tls/server.pem zone="\\u{1b}[31m"')
    fields = log_fields(line)
    assert fields["msg"] == "TLS reload failed"
    assert fields["error"] == 'cannot read "tls/server.pem": no such file\r\n'
    assert fields["file"] == "tls/server.pem"
    assert fields["zone"] == "\x1b[31m"
    assert fields["instance"] == "0"


def test_an_empty_quoted_value_and_a_value_with_equals_signs():
    fields = log_fields('msg="" query="a=b&c=d" level=INFO')
    assert fields == {"msg": "", "query": "a=b&c=d", "level": "INFO"}
