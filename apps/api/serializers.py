"""Resource shapes. Serializers check types only; every rule (address syntax,
IDNA, limits, duplicates) is the directory services' and comes back as a
field-level error through apps.api.errors."""

from __future__ import annotations

from rest_framework import serializers

from apps.api.models import ApiToken
from apps.directory.models import Alias, AppPassword, DkimKey, Domain, Mailbox, Role, User

# Quotas are bytes in a 64-bit column; 0 means unlimited.
MAX_BYTES = 2**63 - 1


def byte_count(**kwargs: object) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=0, max_value=MAX_BYTES, **kwargs)  # type: ignore[arg-type]


class DomainSerializer(serializers.ModelSerializer):
    name = serializers.CharField(max_length=255)
    default_quota = byte_count(required=False, help_text="bytes for new mailboxes; 0: none")
    max_mailboxes = serializers.IntegerField(
        min_value=0, max_value=2**31 - 1, required=False, help_text="0: unlimited")
    greylisting = serializers.BooleanField(required=False,
                                           help_text="defer mail from first-time senders")
    spam_threshold = serializers.FloatField(
        required=False, allow_null=True, min_value=0.1, max_value=1000,
        help_text="spam score filed into Junk for mailboxes without their own; "
                  "null: the site default")
    app_passwords_required = serializers.BooleanField(
        required=False, help_text="mail programs sign in with app passwords only; mailbox "
                                  "passwords sign in to the web")
    second_factor_required = serializers.BooleanField(
        required=False, help_text="mailbox users sign in to the webmail with a TOTP code too; "
                                  "mail programs then need app passwords")
    mailbox_count = serializers.IntegerField(read_only=True)
    used_bytes = serializers.IntegerField(
        read_only=True, help_text="bytes stored in all the domain's mailboxes")

    class Meta:
        model = Domain
        fields = ["id", "name", "unicode_name", "active", "default_quota", "max_mailboxes",
                  "greylisting", "spam_threshold", "app_passwords_required",
                  "second_factor_required", "mailbox_count", "used_bytes", "created"]
        read_only_fields = ["unicode_name", "created"]


class DomainUpdateSerializer(DomainSerializer):
    name = serializers.CharField(read_only=True)


class DkimKeySerializer(serializers.ModelSerializer):
    """The public half only: the private key never leaves the server."""

    public_key = serializers.CharField(
        read_only=True, help_text="base64, the p= tag of the key's DNS record")
    active = serializers.BooleanField(
        read_only=True, help_text="published in DNS (see dns_records)")

    class Meta:
        model = DkimKey
        fields = ["selector", "algorithm", "public_key", "active", "created"]
        read_only_fields = fields


class DomainDetailSerializer(DomainSerializer):
    dkim_keys = DkimKeySerializer(many=True, read_only=True,
                                  help_text="the domain's DKIM keys, newest first")

    class Meta(DomainSerializer.Meta):
        fields = [*DomainSerializer.Meta.fields, "dkim_keys"]


class DnsRecordSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="MX, TXT, SRV or CNAME")
    name = serializers.CharField(
        help_text="owner name, e.g. <selector>._domainkey.<domain> for a DKIM key")
    value = serializers.CharField(
        help_text="the MX host, the CNAME target, the SRV record's \"weight port target\", "
                  "or the whole TXT value (split it into strings of at most "
                  "255 octets where the DNS provider asks for that)")
    priority = serializers.IntegerField(
        allow_null=True, help_text="MX preference or SRV priority; null: none")
    purpose = serializers.CharField()


class MailboxSerializer(serializers.ModelSerializer):
    address = serializers.CharField(max_length=320)
    password = serializers.CharField(write_only=True, max_length=4096,
                                     style={"input_type": "password"})
    quota = byte_count(required=False, allow_null=True,
                       help_text="bytes; 0: unlimited; omitted or null: the domain's default")
    display_name = serializers.CharField(source="user.display_name", required=False,
                                         allow_blank=True, max_length=200)
    domain = serializers.CharField(source="domain.name", read_only=True)
    used_bytes = serializers.IntegerField(read_only=True)
    forward_to = serializers.ListField(
        child=serializers.CharField(max_length=320), read_only=True,
        help_text="addresses each message is forwarded to (set with PATCH)")
    forward_keep_copy = serializers.BooleanField(
        read_only=True, help_text="keep a copy here when forwarding")
    password_web_only = serializers.BooleanField(
        read_only=True, help_text="mail programs must use app passwords; the password signs "
                                  "in to the web only (set with PATCH)")

    class Meta:
        model = Mailbox
        fields = ["id", "address", "password", "domain", "display_name", "quota", "used_bytes",
                  "active", "forward_to", "forward_keep_copy", "password_web_only", "created"]
        read_only_fields = ["created"]


class MailboxUpdateSerializer(MailboxSerializer):
    address = serializers.CharField(read_only=True)
    password = serializers.CharField(write_only=True, required=False, max_length=4096,
                                     style={"input_type": "password"})
    quota = byte_count(required=False, help_text="bytes; 0: unlimited")
    forward_to = serializers.ListField(
        child=serializers.CharField(max_length=320), required=False, max_length=1000,
        help_text="addresses each message is forwarded to; [] turns forwarding off")
    forward_keep_copy = serializers.BooleanField(
        required=False, help_text="keep a copy here when forwarding")
    password_web_only = serializers.BooleanField(
        required=False, help_text="mail programs must use app passwords; the password signs "
                                  "in to the web only")


class AppPasswordSerializer(serializers.ModelSerializer):
    mailbox = serializers.CharField(
        source="mailbox.address", required=False, max_length=320,
        help_text="address of the mailbox it is for (default: your own)")
    name = serializers.CharField(max_length=100, help_text="the program or device it is for")

    class Meta:
        model = AppPassword
        fields = ["id", "mailbox", "name", "created", "last_used", "last_used_ip",
                  "last_used_protocol"]
        read_only_fields = ["created", "last_used", "last_used_ip", "last_used_protocol"]


class NewAppPasswordSerializer(AppPasswordSerializer):
    password = serializers.CharField(read_only=True,
                                     help_text="shown this once; only a digest is kept")

    class Meta(AppPasswordSerializer.Meta):
        fields = [*AppPasswordSerializer.Meta.fields, "password"]


class AliasSerializer(serializers.ModelSerializer):
    address = serializers.CharField(max_length=320,
                                    help_text="local@domain, or @domain for a catch-all")
    destinations = serializers.ListField(
        child=serializers.CharField(max_length=320), max_length=1000,
        help_text="local mailboxes or external addresses")
    domain = serializers.CharField(source="domain.name", read_only=True)

    class Meta:
        model = Alias
        fields = ["id", "address", "destinations", "domain", "is_catch_all", "active", "created"]
        read_only_fields = ["is_catch_all", "created"]


class AliasUpdateSerializer(AliasSerializer):
    address = serializers.CharField(read_only=True)
    destinations = serializers.ListField(
        child=serializers.CharField(max_length=320), max_length=1000, required=False)


class MeSerializer(serializers.ModelSerializer):
    password = serializers.CharField(write_only=True, required=False, max_length=4096,
                                     style={"input_type": "password"})
    display_name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    administered_domains = serializers.SlugRelatedField(
        slug_field="name", many=True, read_only=True)
    mailbox = MailboxSerializer(read_only=True, allow_null=True)

    class Meta:
        model = User
        fields = ["id", "email", "display_name", "role", "password", "administered_domains",
                  "mailbox"]
        read_only_fields = ["email", "role"]


class ApiTokenSerializer(serializers.ModelSerializer):
    account = serializers.CharField(
        source="user.email", required=False, max_length=320,
        help_text="login of the account the token is for (default: your own)")
    name = serializers.CharField(required=False, allow_blank=True, max_length=100)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "account", "prefix", "created"]
        read_only_fields = ["prefix", "created"]


class NewApiTokenSerializer(ApiTokenSerializer):
    key = serializers.CharField(read_only=True, help_text="shown this once; only a digest is kept")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "key"]


class DomainNameField(serializers.SlugRelatedField):
    """A hosted domain by name. A name with NUL in it names none (PostgreSQL
    would refuse the lookup itself)."""

    def to_internal_value(self, data: object) -> Domain:
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", slug_name=self.slug_field, value=data)
        return super().to_internal_value(data)


class AdministratorSerializer(serializers.ModelSerializer):
    email = serializers.CharField(max_length=320)
    password = serializers.CharField(write_only=True, max_length=4096,
                                     style={"input_type": "password"})
    display_name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    role = serializers.ChoiceField(choices=[Role.DOMAIN_ADMIN.value, Role.SUPERADMIN.value],
                                   default=Role.DOMAIN_ADMIN.value)
    domains = DomainNameField(
        source="administered_domains", slug_field="name", many=True, required=False,
        queryset=Domain.objects.all(),
        help_text="names of the domains a domain administrator manages (a superadmin: all)")
    is_active = serializers.BooleanField(required=False, default=True)
    two_factor = serializers.SerializerMethodField(
        help_text="whether sign-in asks this administrator for a TOTP code")

    class Meta:
        model = User
        fields = ["id", "email", "password", "display_name", "role", "domains", "is_active",
                  "two_factor", "date_joined"]
        read_only_fields = ["date_joined"]

    def get_two_factor(self, user: User) -> bool:
        return bool(getattr(user, "two_factor", False))


class AdministratorUpdateSerializer(AdministratorSerializer):
    email = serializers.CharField(read_only=True)
    password = serializers.CharField(write_only=True, required=False, max_length=4096,
                                     style={"input_type": "password"})
    role = serializers.ChoiceField(choices=[Role.DOMAIN_ADMIN.value, Role.SUPERADMIN.value],
                                   required=False)
    is_active = serializers.BooleanField(required=False)
