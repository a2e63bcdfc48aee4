"""pii: the scan for personal data left behind (:mod:`.scanner`, :mod:`.detectors`)."""

#: rows sampled per table for the content detectors (here, so that the operator's default costs no
#: import of the scanner when a DAG file is parsed)
DEFAULT_SAMPLE_ROWS = 1000
