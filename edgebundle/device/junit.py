"""The device test as JUnit XML, one testcase per budget, so that CI test tabs show which budget a
binary broke. Budgets not enforced under emulation are testcases marked skipped, with the reason."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from .report import DeviceReport


def junit_xml(*reports: DeviceReport) -> str:
    """One testsuite per device measured."""
    suites = ET.Element("testsuites")
    for report in reports:
        _suite(suites, report)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _suite(suites: ET.Element, report: DeviceReport) -> None:
    failures = len(report.failed())
    skipped = sum(1 for b in report.budgets if b.passed is None)
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"edgebundle test {report.binary} on {report.device}",
        tests=str(len(report.budgets)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("device", report.device),
        ("arch", report.arch),
        ("emulated", str(report.emulated).lower()),
        ("target", report.target),
        ("size_bytes", str(report.size_bytes)),
        ("startup_ms.cold", str(report.startup_ms.cold)),
        ("startup_ms.warm_p50", str(report.startup_ms.warm_p50)),
        ("startup_ms.warm_p90", str(report.startup_ms.warm_p90)),
        ("peak_rss_bytes", str(report.peak_rss_bytes)),
        *(
            [("rss.guest_estimate_bytes", str(report.guest_peak_rss_bytes))]
            if report.guest_peak_rss_bytes is not None
            else []
        ),
        ("latency_ms.p50", str(report.latency_ms.p50)),
        ("latency_ms.p90", str(report.latency_ms.p90)),
        *(report.benchmark.properties() if report.benchmark else []),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    classname = f"edgebundle.budgets.{report.device}"
    for budget in report.budgets:
        case = ET.SubElement(suite, "testcase", classname=classname, name=budget.name, time="0")
        if budget.passed is False:
            failure = ET.SubElement(case, "failure", message=budget.describe(), type="BudgetExceeded")
            failure.text = budget.describe()
        elif budget.passed is None:
            ET.SubElement(case, "skipped", message=budget.describe())
    out = ET.SubElement(suite, "system-out")
    out.text = json.dumps(report.to_json(), indent=2)
