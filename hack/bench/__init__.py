"""`make bench`: numbers, not pass/fail: data path, reconfiguration, change latency, access-list scale."""
