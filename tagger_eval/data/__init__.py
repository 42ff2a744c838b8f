"""Datasets: the data.db format, the Danbooru API client and downloader, the synthetic demo dataset."""
