"""Stage: worklist. Modality Worklist C-FIND client, answer parser and offline cache."""

from gateway.worklist.cache import decode_item, encode_item, load_cache, load_cache_with_time, save_cache
from gateway.worklist.client import (
    QueryResult,
    build_query,
    query_worklist,
    query_worklist_result,
    should_replace_cache,
)
from gateway.worklist.parse import parse_answer

__all__ = ["QueryResult", "build_query", "decode_item", "encode_item", "load_cache", "load_cache_with_time",
           "parse_answer", "query_worklist", "query_worklist_result", "save_cache", "should_replace_cache"]
