from django.contrib import admin

from apps.antispam.models import BayesModel, SpooledMessage


@admin.register(SpooledMessage)
class SpooledMessageAdmin(admin.ModelAdmin):
    """Mail accepted and waiting for its checks: normally empty within seconds."""

    list_display = ["pk", "received", "client_ip", "mail_from", "spf_result", "claimed_until"]
    readonly_fields = [f.name for f in SpooledMessage._meta.fields]


@admin.register(BayesModel)
class BayesModelAdmin(admin.ModelAdmin):
    list_display = ["pk", "mailbox", "spam_count", "ham_count"]
    readonly_fields = ["mailbox", "spam_count", "ham_count"]
