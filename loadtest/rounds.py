"""Reading `loadtest route` text reports, for the round scripts (attack.sh,
search-pairs.sh), which compare runs by their medians."""


def p99(path, row):
    """The p99, in µs, of the latency row labelled `row` (e.g. "create -> first offer")
    in the `route` report at `path`; None when the report has no such row."""
    with open(path) as f:
        for line in f:
            if line.startswith(row):
                return int(line[len(row):].split()[3])  # count, p50, p90, p99
    return None
