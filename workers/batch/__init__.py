"""A batch's life: claimed from its lane (queue), enriched (enrichment), stored or handed to
the store writer (delivery, store_writer), acknowledged with its dead letters, counted (metrics);
the batch loop (loop) runs these stages. It never imports the RQ runtime (workers.runtime)."""
