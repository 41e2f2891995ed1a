"""The housekeeping service: keeps the spare pool, re-drives or fails stranded work, reaps
orphan amphorae, purges old read-model rows and rotates amphora certificates, each as a
periodic job that one replica at a time runs."""
