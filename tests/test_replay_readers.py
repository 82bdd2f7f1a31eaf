"""Readers: input lines turned into the request bodies (or rejects and skips) a user expects."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from hitstream.replay.combined import LogFilter, read_combined
from hitstream.replay.csvfile import read_csv
from hitstream.replay.ndjson import read_ndjson
from hitstream.replay.records import Malformed, ReplayInputError, Sendable, Skipped
from hitstream.replay.sessions import Sessionizer

SITE = "https://example.com"
UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"


def log_line(
    ip: str = "203.0.113.7",
    when: str = "10/Oct/2025:13:55:36 +0200",
    request: str = "GET /pricing?plan=pro HTTP/1.1",
    status: int = 200,
    referrer: str = "https://search.example/?q=x",
    agent: str = UA,
) -> str:
    return f'{ip} - frank [{when}] "{request}" {status} 2326 "{referrer}" "{agent}"'


def combined(
    tmp_path: Path,
    lines: list[str],
    *,
    compress: bool = False,
    sessions: bool = False,
    log_filter: LogFilter | None = None,
) -> list:
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / ("access.log.gz" if compress else "access.log")
    path.write_bytes(gzip.compress(data) if compress else data)
    sessionizer = Sessionizer("example.com") if sessions else None
    return list(read_combined(path, SITE, log_filter or LogFilter(), sessionizer))


def test_combined_line_becomes_pageview(tmp_path: Path) -> None:
    [result] = combined(tmp_path, [log_line()])
    assert result == Sendable(
        1,
        {
            "url": "https://example.com/pricing?plan=pro",
            "timestamp": "2025-10-10T13:55:36+02:00",
            "visitor_ip": "203.0.113.7",
            "user_agent": UA,
            "referrer": "https://search.example/?q=x",
        },
    )


def test_combined_ipv6_gzip_and_absent_referrer(tmp_path: Path) -> None:
    [result] = combined(tmp_path, [log_line(ip="2001:DB8::1", referrer="-")], compress=True)
    assert isinstance(result, Sendable)
    assert result.body["visitor_ip"] == "2001:db8::1"
    assert "referrer" not in result.body


def test_combined_keeps_only_page_requests(tmp_path: Path) -> None:
    results = combined(
        tmp_path,
        [
            log_line(request="GET /style.css HTTP/1.1"),
            log_line(request="GET /img/Logo.PNG?v=3 HTTP/2.0"),
            log_line(status=301),
            log_line(status=404),
            log_line(request="POST /login HTTP/1.1"),
            log_line(agent="-"),
            log_line(request="GET /docs/v1.2/ HTTP/1.1"),
            "",
        ],
    )
    assert results == [
        Skipped(1, "asset .css"),
        Skipped(2, "asset .png"),
        Skipped(3, "status 301"),
        Skipped(4, "status 404"),
        Skipped(5, "method POST"),
        Skipped(6, "no user agent"),
        Sendable(7, results[6].body),
        Skipped(8, "blank line"),
    ]
    assert results[6].body["url"] == "https://example.com/docs/v1.2/"


def test_combined_filters_are_configurable(tmp_path: Path) -> None:
    log_filter = LogFilter(
        methods=frozenset({"GET", "POST"}), statuses=frozenset({200, 301}), skip_extensions=frozenset()
    )
    results = combined(tmp_path, [log_line(request="POST /a.css HTTP/1.1", status=301)], log_filter=log_filter)
    assert [type(r) for r in results] == [Sendable]


def test_combined_malformed_lines_are_rejected_with_reason(tmp_path: Path) -> None:
    results = combined(
        tmp_path,
        [
            "this is not a log line",
            log_line(ip="crawler.example.net"),
            log_line(when="10/Foo/2025:13:55:36 +0200"),
            log_line(when="31/Feb/2025:13:55:36 +0200"),
            log_line(request="\\x16\\x03\\x01"),
            log_line(request="GET example.com HTTP/1.1"),
            log_line(ip="999.1.1.1"),
        ],
    )
    assert results == [
        Malformed(1, "not a combined log line"),
        Malformed(2, "client address is not an IP address"),
        Malformed(3, "time is not [dd/Mon/yyyy:HH:MM:SS +zzzz]"),
        Malformed(4, "time is not [dd/Mon/yyyy:HH:MM:SS +zzzz]"),
        Malformed(5, "request is not METHOD TARGET PROTOCOL"),
        Malformed(6, "request target is not a path"),
        Malformed(7, "client address is not an IP address"),
    ]


def test_combined_unescapes_quotes_and_utf8_and_ignores_trailing_fields(tmp_path: Path) -> None:
    agent = 'Bot \\"quoted\\" caf\\xC3\\xA9'
    [result] = combined(tmp_path, [log_line(agent=agent) + ' "extra" 0.123'])
    assert isinstance(result, Sendable)
    assert result.body["user_agent"] == 'Bot "quoted" café'


def test_combined_absolute_form_target_keeps_path(tmp_path: Path) -> None:
    [result] = combined(tmp_path, [log_line(request="GET http://proxy.example/a/b?c=1 HTTP/1.1")])
    assert result.body["url"] == "https://example.com/a/b?c=1"


def test_sessions_split_after_30_minutes_and_per_visitor(tmp_path: Path) -> None:
    results = combined(
        tmp_path,
        [
            log_line(when="10/Oct/2025:10:00:00 +0000"),
            log_line(when="10/Oct/2025:10:29:00 +0000"),  # 29 min later: same session
            log_line(when="10/Oct/2025:10:58:59 +0000"),  # 29:59 after the previous: same
            log_line(when="10/Oct/2025:11:29:00 +0000"),  # 30:01 idle: new session
            log_line(ip="198.51.100.2", when="10/Oct/2025:11:29:00 +0000"),  # other IP
            log_line(agent="curl/8.5", when="10/Oct/2025:11:29:30 +0000"),  # other user agent
            log_line(when="10/Oct/2025:12:29:00 +0100"),  # line 4's instant, other zone
        ],
        sessions=True,
    )
    ids = [r.body["session_id"] for r in results]
    assert ids[0] == ids[1] == ids[2]
    assert ids[3] != ids[0]
    assert len({ids[3], ids[4], ids[5]}) == 3
    assert ids[6] == ids[3]
    assert all("198.51.100.2" not in i and "203.0.113.7" not in i for i in ids)


def test_sessions_are_the_same_on_every_read(tmp_path: Path) -> None:
    lines = [log_line(when=f"10/Oct/2025:1{h}:00:00 +0000") for h in range(3)]
    first = [r.body["session_id"] for r in combined(tmp_path, lines, sessions=True)]
    again = [r.body["session_id"] for r in combined(tmp_path, lines, sessions=True)]
    assert first == again and len(set(first)) == 3


def test_ndjson_lines(tmp_path: Path) -> None:
    path = tmp_path / "views.ndjson"
    path.write_bytes(b'{"url": "https://example.com/"}\n\n[1, 2]\n{"url": \n{"a": 1}')
    assert list(read_ndjson(path)) == [
        Sendable(1, {"url": "https://example.com/"}),
        Skipped(2, "blank line"),
        Malformed(3, "not a JSON object"),
        Malformed(4, "not valid JSON"),
        Sendable(5, {"a": 1}),
    ]


def test_ndjson_gzip(tmp_path: Path) -> None:
    path = tmp_path / "views.ndjson.gz"
    path.write_bytes(gzip.compress(b'{"url": "https://example.com/"}\n'))
    assert list(read_ndjson(path)) == [Sendable(1, {"url": "https://example.com/"})]


def test_csv_records_typed_like_the_json_body(tmp_path: Path) -> None:
    path = tmp_path / "views.csv"
    path.write_text(
        "url,timestamp,visitor_ip,user_agent,referrer,screen_width,dnt\n"
        "https://example.com/,2025-10-10T10:00:00Z,203.0.113.7,UA,,1920,false\n"
        '"https://example.com/a,b",2025-10-10T10:00:00Z,203.0.113.7,"multi\nline",,,TRUE\n'
        "https://example.com/,2025-10-10T10:00:00Z,203.0.113.7,UA,,wide,\n"
        "https://example.com/,2025-10-10T10:00:00Z,203.0.113.7,UA,,,maybe\n"
        "only,three,cells\n"
        ",,,,,,\n"
    )
    assert list(read_csv(path)) == [
        Sendable(
            2,
            {
                "url": "https://example.com/",
                "timestamp": "2025-10-10T10:00:00Z",
                "visitor_ip": "203.0.113.7",
                "user_agent": "UA",
                "screen_width": 1920,
                "dnt": False,
            },
        ),
        Sendable(
            3,
            {
                "url": "https://example.com/a,b",
                "timestamp": "2025-10-10T10:00:00Z",
                "visitor_ip": "203.0.113.7",
                "user_agent": "multi\nline",
                "dnt": True,
            },
        ),
        Malformed(5, "screen_width must be a whole number"),
        Malformed(6, "dnt must be true or false"),
        Malformed(7, "CSV record has 3 cells, the header has 7"),
        Skipped(8, "blank line"),
    ]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("url,timestamp,visitor_ip,useragent", "CSV column 'useragent' is not a pageview field"),
        ("url,timestamp,visitor_ip", "CSV header lacks the required column 'user_agent'"),
    ],
)
def test_csv_bad_header_names_the_column(tmp_path: Path, header: str, message: str) -> None:
    path = tmp_path / "views.csv"
    path.write_text(header + "\n")
    with pytest.raises(ReplayInputError, match=message):
        read_csv(path)
