"""Builds the index adapter named in settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hanrag.index.base import Index
from hanrag.settings import Settings

if TYPE_CHECKING:
    from hanrag.store.catalog import Catalog


def build_index(settings: Settings, catalog: Catalog | None = None) -> Index:
    if settings.index.backend == "milvus":
        from hanrag.index.milvus import MilvusIndex

        index = settings.index
        uri = index.milvus_uri
        lite = "://" not in uri
        return MilvusIndex(
            uri,
            collection=index.milvus_collection,
            # milvus-lite supports only FLAT / IVF_FLAT dense indexes.
            index_type="FLAT" if lite else index.milvus_index_type,
            index_params={} if lite else dict(index.milvus_index_params),
            metadata_lookup=catalog.documents_with_metadata if catalog is not None else None,
            metadata_keys=catalog.metadata_keys if catalog is not None else None,
            token=index.milvus_token.get_secret_value() if index.milvus_token else "",
            bm25_k1=settings.retrieval.bm25_k1,
            bm25_b=settings.retrieval.bm25_b,
            acl_filter=index.milvus_acl_filter,
        )
    from hanrag.index.local import LocalIndex

    return LocalIndex(
        settings.data_dir / "index", bm25_k1=settings.retrieval.bm25_k1, bm25_b=settings.retrieval.bm25_b
    )
