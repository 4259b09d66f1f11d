"""The usage ledger and the LLM inventory (SPEC §19): one JSONL line per model call, totals per
day/agent/model/user over a date range, and the providers and models with their breaker state."""

from app.usage.inventory import model_list, provider_list
from app.usage.ledger import UsageLedger
from app.usage.query import GROUP_BY, MAX_RANGE_DAYS, UsageQuery, parse_usage_query, summarize, usage_report

__all__ = [
    "GROUP_BY",
    "MAX_RANGE_DAYS",
    "UsageLedger",
    "UsageQuery",
    "model_list",
    "parse_usage_query",
    "provider_list",
    "summarize",
    "usage_report",
]
