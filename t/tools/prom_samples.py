#!/usr/bin/python3
"""Parses a Prometheus text exposition (stdin) with the real parser,
prometheus_client's (Debian python3-prometheus-client), and prints it as
JSON: {"families": [[name, type, help], ...],
       "samples": [[name, {label: value}, value], ...]}.
Exits 1 (the parser's message on stderr) when the text does not parse."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
families, samples = [], []
try:
    for f in text_string_to_metric_families(text):
        families.append([f.name, f.type, f.documentation])
        for s in f.samples:
            samples.append([s.name, s.labels, s.value])
except Exception as e:  # the parser raises ValueError and others
    print("prom_samples: %s" % e, file=sys.stderr)
    sys.exit(1)
json.dump({"families": families, "samples": samples}, sys.stdout)
