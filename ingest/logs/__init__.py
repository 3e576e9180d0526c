"""Raw log lines -> log templates (Drain3 with generic masking), error-line detection, and evaluation."""

from ingest.logs.templates import (
    FileTemplateState,
    LogTemplateConfig,
    LogTemplateMiner,
    TemplateMatch,
    is_error_line,
)

__all__ = ["FileTemplateState", "LogTemplateConfig", "LogTemplateMiner", "TemplateMatch", "is_error_line"]
