"""Results: the store (:mod:`.store`, SQLite embedded) and the one reader of result documents (:mod:`.reader`)."""
