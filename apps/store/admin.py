from django.contrib import admin

from apps.store.models import Folder


@admin.register(Folder)
class FolderAdmin(admin.ModelAdmin):
    list_display = ["name", "mailbox", "message_count", "total_size", "uidnext", "highestmodseq"]
    search_fields = ["mailbox__address", "name"]
    readonly_fields = ["uidvalidity", "uidnext", "highestmodseq", "message_count", "total_size"]
