"""Regenerate ``report_schema.json`` from :class:`HardwareReport`.

Usage: ``python -m snncompress.hardware.write_schema``
"""

from snncompress.hardware.report import write_report_schema

if __name__ == "__main__":
    print(write_report_schema())
