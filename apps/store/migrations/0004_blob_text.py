"""The full-text index of blobs (apps/store/textindex.py): the BlobText rows,
and per database the substring-capable index over their columns. Existing
blobs are indexed by ``manage.py reindex``; until then searches read them."""

import django.db.models.deletion
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models

COLUMNS = ("from_text", "to_text", "cc_text", "bcc_text", "subject", "headers", "body")
_LIST = ", ".join(COLUMNS)
_NEW = ", ".join(f"new.{c}" for c in COLUMNS)
_OLD = ", ".join(f"old.{c}" for c in COLUMNS)

# SQLite: an FTS5 table over store_blobtext (external content, so the text is
# stored once) with the trigram tokenizer, which answers GLOB '*needle*' from
# the index. Case-sensitive, because the text is case-folded before it is
# stored (Python's casefold, as the search compares).
SQLITE_FORWARD = [
    f"CREATE VIRTUAL TABLE store_blobtext_fts USING fts5({_LIST}, content='store_blobtext',"
    " content_rowid='id', tokenize='trigram case_sensitive 1')",
    f"CREATE TRIGGER store_blobtext_ai AFTER INSERT ON store_blobtext BEGIN"
    f" INSERT INTO store_blobtext_fts(rowid, {_LIST}) VALUES (new.id, {_NEW}); END",
    f"CREATE TRIGGER store_blobtext_ad AFTER DELETE ON store_blobtext BEGIN"
    f" INSERT INTO store_blobtext_fts(store_blobtext_fts, rowid, {_LIST})"
    f" VALUES ('delete', old.id, {_OLD}); END",
    f"CREATE TRIGGER store_blobtext_au AFTER UPDATE ON store_blobtext BEGIN"
    f" INSERT INTO store_blobtext_fts(store_blobtext_fts, rowid, {_LIST})"
    f" VALUES ('delete', old.id, {_OLD});"
    f" INSERT INTO store_blobtext_fts(rowid, {_LIST}) VALUES (new.id, {_NEW}); END",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER store_blobtext_au", "DROP TRIGGER store_blobtext_ad",
    "DROP TRIGGER store_blobtext_ai", "DROP TABLE store_blobtext_fts",
]
# PostgreSQL: a pg_trgm GIN index per column; LIKE '%needle%' uses it.
POSTGRES_FORWARD = [f"CREATE INDEX store_blobtext_{c}_trgm ON store_blobtext"
                    f" USING gin ({c} gin_trgm_ops)" for c in COLUMNS]
POSTGRES_BACKWARD = [f"DROP INDEX store_blobtext_{c}_trgm" for c in COLUMNS]


def _run(statements: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def run(apps, schema_editor):  # type: ignore[no-untyped-def]
        for statement in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)
    return run


class Migration(migrations.Migration):

    dependencies = [
        ('store', '0003_trace_events'),
    ]

    operations = [
        TrigramExtension(),  # PostgreSQL only; a no-op elsewhere
        migrations.CreateModel(
            name='BlobText',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('from_text', models.TextField(blank=True)),
                ('to_text', models.TextField(blank=True)),
                ('cc_text', models.TextField(blank=True)),
                ('bcc_text', models.TextField(blank=True)),
                ('subject', models.TextField(blank=True)),
                ('headers', models.TextField(blank=True)),
                ('body', models.TextField(blank=True)),
                ('complete', models.BooleanField(default=True)),
                ('blob', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='search_text', to='store.blob')),
            ],
        ),
        migrations.RunPython(
            _run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRES_FORWARD}),
            _run({"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRES_BACKWARD}),
        ),
    ]
