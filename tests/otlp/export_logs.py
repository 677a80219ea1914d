"""Sends Windows process-creation events as OTLP log records with the
OpenTelemetry Python SDK, the way an application's logging does:

    export_logs.py http|grpc ENDPOINT TAG

One record runs whoami.exe (a detection of the sample rules), one
notepad.exe; each body is the event as a map. Exits 1 when the exporter
reports a failure.
"""

import logging
import sys

from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import LogExportResult, SimpleLogRecordProcessor

transport, endpoint, tag = sys.argv[1:4]
if transport == "http":
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    exporter = OTLPLogExporter(endpoint=endpoint)
else:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    exporter = OTLPLogExporter(endpoint=endpoint, insecure=True)


class Checked:
    """The exporter, remembering whether an export failed."""

    failed = False

    def export(self, batch):
        result = exporter.export(batch)
        if result != LogExportResult.SUCCESS:
            Checked.failed = True
        return result

    def shutdown(self):
        exporter.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


provider = LoggerProvider()
provider.add_log_record_processor(SimpleLogRecordProcessor(Checked()))
logger = logging.getLogger("rsigma-test")
logger.propagate = False
logger.setLevel(logging.INFO)
logger.addHandler(LoggingHandler(logger_provider=provider))
for image in ["C:\\Windows\\System32\\whoami.exe", "C:\\Windows\\System32\\notepad.exe"]:
    logger.info({"EventID": 1, "Image": image, "tag": tag})
provider.shutdown()
sys.exit(1 if Checked.failed else 0)
