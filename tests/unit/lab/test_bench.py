"""The bench's pure parts (hack/bench/): wrk's report read right, the rendered haproxy.cfg changed
only where a namespace run needs it, tuning lines put in the right section, generated CIDR lists."""

from __future__ import annotations

import ipaddress

import pytest

from hack.bench import access_scale, datapath
from hack.bench.figures import cpu_times, duration_ms, median, parse_wrk, steal_share, summarize, table

WRK_REPORT = """\
Running 5s test @ http://203.0.113.110/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   512.30us    1.02ms  31.20ms   97.12%
    Req/Sec    61.23k     3.10k   66.01k    74.00%
  Latency Distribution
     50%  402.00us
     75%  511.00us
     90%  702.00us
     99%    4.21ms
  304652 requests in 5.00s, 47.07MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  60929.44
Transfer/sec:      9.41MB
"""


def test_wrk_report_gives_rate_percentiles_and_every_error():
    figures = parse_wrk(WRK_REPORT)
    assert figures == {"rps": 60929.44, "p50": 0.402, "p99": 4.21, "requests": 304652, "errors": 5, "non_2xx": 7}


def test_a_wrk_report_without_percentiles_is_refused():
    with pytest.raises(ValueError, match="p50"):
        parse_wrk(WRK_REPORT.replace("50%", "51%"))


@pytest.mark.parametrize("text, ms", [("812.00us", 0.812), ("1.5ms", 1.5), ("2.00s", 2000.0)])
def test_wrk_durations_in_milliseconds(text, ms):
    assert duration_ms(text) == pytest.approx(ms)


def test_summary_is_the_median_of_the_runs_and_counts_every_error():
    runs = [dict(parse_wrk(WRK_REPORT), rps=r) for r in (10.0, 30.0, 20.0)]
    summary = summarize(runs)
    assert summary["rps"] == 20.0 and summary["errors"] == 3 * 12 and len(summary["runs"]) == 3
    assert median([3, 1, 2]) == 2


def test_steal_is_the_hypervisors_share_of_all_cpu_time_between_two_readings():
    # /proc/stat: cpu user nice system idle iowait irq softirq steal guest guest_nice
    before = cpu_times("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n")
    after = cpu_times("cpu  200 0 100 1500 20 0 10 170 7 0\n")
    assert before == (35, 1000) and after == (170, 2000)
    assert steal_share(before, after) == 0.135  # 135 of 1,000 jiffies; guest time is inside user
    assert steal_share(after, after) is None
    steal, total = cpu_times()  # the lab machine's own
    assert 0 <= steal <= total


def test_table_aligns_columns():
    text = table(("a", "bb"), [[1234567, None], ["x", 0.5]])
    assert text.splitlines() == ["a          bb", "---------  ----", "1,234,567  -", "x          0.50"]


def test_namespace_run_changes_only_the_runtime_api_socket_and_the_server_state_file(tmp_path):
    rendered = datapath.rendered_config()
    adapted = datapath.for_namespace(rendered, tmp_path)
    changed = [b.strip() for a, b in zip(rendered.splitlines(), adapted.splitlines(), strict=False) if a != b]
    assert len(changed) == 2
    assert changed[0].startswith(f"stats socket {tmp_path}/")
    assert changed[1] == f"server-state-file {tmp_path}/haproxy-server-state"
    assert (tmp_path / "haproxy-server-state").read_text() == "1\n"  # no states, no warning
    assert "chroot /var/lib/haproxy" in adapted and "send-proxy-v2" in adapted


def test_a_tuning_variant_adds_its_lines_to_its_own_section():
    text = datapath.variant_config(datapath.rendered_config(), "splice-auto")
    defaults = text.split("\ndefaults\n", 1)[1].split("\n\n", 1)[0]
    assert "    option splice-auto" in defaults.splitlines()
    assert text.count("option splice-auto") == 1


def test_access_scale_lists_are_distinct_valid_and_repeatable():
    cidrs = access_scale.cidrs(500)
    assert len(set(cidrs)) == 500 and cidrs == access_scale.cidrs(500)
    assert all(ipaddress.ip_network(c).subnet_of(access_scale.POOL) for c in cidrs)


def test_access_edge_lists_are_distinct_repeatable_and_miss_the_visitor(tmp_path):
    from hack.bench import access_edge

    cidrs = access_edge.cidrs(2000)
    assert len(set(cidrs)) == 2000 and cidrs == access_edge.cidrs(2000)
    visitor = ipaddress.ip_address(datapath.VISITOR)
    assert not any(visitor in ipaddress.ip_network(c) for c in cidrs)
    cfg = access_edge.edge_config(2000, tmp_path)
    listed = tmp_path / "source-ip-edge-deny.acl"
    assert f"src -f {listed} }}" in cfg and len(listed.read_text().splitlines()) == 2 + 2000
    assert "src -f" not in access_edge.edge_config(0, tmp_path), "the empty list: no rule, the baseline"
