from django.urls import path, re_path

from apps.webadmin import (
    views_admins,
    views_aliases,
    views_audit,
    views_dashboard,
    views_domains,
    views_queue,
    views_trace,
)
from apps.webadmin import views_mailboxes as mailboxes

app_name = "webadmin"

urlpatterns = [
    # --- operations: dashboard, outbound queue, message trace ---
    path("", views_dashboard.dashboard, name="dashboard"),
    path("queue/", views_queue.queue_list, name="queue"),
    path("queue/<str:queue_id>/", views_queue.queue_message, name="queue_message"),
    re_path(r"^queue/(?P<queue_id>[^/]+)/(?P<action>retry|bounce|delete)/$",
            views_queue.queue_action, name="queue_action"),
    path("trace/", views_trace.message_trace, name="trace"),
    # --- end operations ---
]

# The directory side: domains, mailboxes, aliases, administrators, audit log, 2FA.
urlpatterns += [
    path("domains/", views_domains.domain_list, name="domain_list"),
    path("domains/new/", views_domains.domain_create, name="domain_create"),
    path("domains/<int:pk>/", views_domains.domain_detail, name="domain_detail"),
    path("domains/<int:pk>/active/", views_domains.domain_set_active, name="domain_set_active"),
    path("domains/<int:pk>/delete/", views_domains.domain_delete, name="domain_delete"),
    path("domains/<int:pk>/dns/", views_domains.domain_dns, name="domain_dns"),
    path("domains/<int:pk>/dns/target/", views_domains.domain_dns_target,
         name="domain_dns_target"),
    path("domains/<int:pk>/dns/publish/", views_domains.domain_dns_publish,
         name="domain_dns_publish"),
    path("mailboxes/", mailboxes.mailbox_list, name="mailbox_list"),
    path("mailboxes/new/", mailboxes.mailbox_create, name="mailbox_create"),
    path("mailboxes/import/", mailboxes.mailbox_import, name="mailbox_import"),
    path("mailboxes/export.csv", mailboxes.mailbox_export, name="mailbox_export"),
    path("mailboxes/<int:pk>/", mailboxes.mailbox_edit, name="mailbox_edit"),
    path("mailboxes/<int:pk>/password/", mailboxes.mailbox_password, name="mailbox_password"),
    path("mailboxes/<int:pk>/second-factor/reset/", mailboxes.mailbox_reset_second_factor,
         name="mailbox_reset_second_factor"),
    path("mailboxes/<int:pk>/delete/", mailboxes.mailbox_delete, name="mailbox_delete"),
    path("mailboxes/<int:pk>/import-mail/", mailboxes.mailbox_import_mail,
         name="mailbox_import_mail"),
    path("mailboxes/<int:pk>/import-mail/jobs/", mailboxes.mailbox_import_jobs,
         name="mailbox_import_jobs"),
    path("mailboxes/<int:pk>/import-mail/imap/", mailboxes.mailbox_import_imap,
         name="mailbox_import_imap"),
    path("mailboxes/<int:pk>/import-mail/jobs/<int:job_pk>/", mailboxes.mailbox_import_job_action,
         name="mailbox_import_job_action"),
    path("aliases/", views_aliases.alias_list, name="alias_list"),
    path("aliases/new/", views_aliases.alias_create, name="alias_create"),
    path("aliases/<int:pk>/", views_aliases.alias_edit, name="alias_edit"),
    path("aliases/<int:pk>/delete/", views_aliases.alias_delete, name="alias_delete"),
    path("admins/", views_admins.admin_list, name="admin_list"),
    path("admins/new/", views_admins.admin_create, name="admin_create"),
    path("admins/<int:pk>/", views_admins.admin_edit, name="admin_edit"),
    path("admins/<int:pk>/second-factor/reset/", views_admins.admin_reset_second_factor,
         name="admin_reset_second_factor"),
    path("admins/<int:pk>/delete/", views_admins.admin_delete, name="admin_delete"),
    path("audit/", views_audit.audit_log, name="audit_log"),
    path("security/", views_audit.security, name="security"),
]
