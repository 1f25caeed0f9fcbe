from django.contrib import admin

from apps.directory.models import Alias, Domain, Mailbox, User


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ["name", "active", "default_quota", "max_mailboxes", "created"]
    list_filter = ["active"]
    search_fields = ["name"]


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin):
    list_display = ["address", "domain", "quota", "active", "created"]
    list_filter = ["active", "domain"]
    search_fields = ["address"]
    raw_id_fields = ["user"]


@admin.register(Alias)
class AliasAdmin(admin.ModelAdmin):
    list_display = ["address", "destinations", "active"]
    list_filter = ["active", "domain"]
    search_fields = ["address"]


@admin.register(User)
class UserAdmin(admin.ModelAdmin):
    list_display = ["email", "role", "is_active", "date_joined"]
    list_filter = ["role", "is_active"]
    search_fields = ["email", "display_name"]
    exclude = ["password"]
    filter_horizontal = ["administered_domains"]
