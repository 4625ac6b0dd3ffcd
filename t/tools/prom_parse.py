#!/usr/bin/python3
"""Parses the Prometheus text format with the real parser, for the tests.

Run with /usr/bin/python3 (needs prometheus_client, Debian package
python3-prometheus-client).

  prom_parse.py < exposition

prints, as JSON, every metric family that
prometheus_client.parser.text_string_to_metric_families() finds:

  [{"name": ..., "type": ..., "help": ...,
    "samples": [{"name": ..., "labels": {...}, "value": ...}, ...]}, ...]

The parser drops "_total" from a counter family's name, not from its
samples' names.  Exits non-zero, with the parser's error, on text it
cannot parse.
"""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    out = []

    for family in text_string_to_metric_families(text):
        out.append({
            "name": family.name,
            "type": family.type,
            "help": family.documentation,
            "samples": [{"name": s.name, "labels": s.labels,
                         "value": s.value} for s in family.samples],
        })

    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
