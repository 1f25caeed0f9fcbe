from django.contrib import admin

from apps.pop3.models import MailboxOptions


@admin.register(MailboxOptions)
class MailboxOptionsAdmin(admin.ModelAdmin):
    list_display = ("mailbox", "leave_copy")
    list_filter = ("leave_copy",)
    raw_id_fields = ("mailbox",)
