"""Benchmarks of django-signal-broadcaster against raw pika, run by `make bench`.

Every library figure is reported as a ratio against raw pika measured in the same run:
the machine is shared, so absolute figures drift while same-run ratios hold.
"""
