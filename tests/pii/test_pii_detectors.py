"""Unit tests of the name and content detectors (no database)."""

from __future__ import annotations

import pytest

from scalingo_staging_sync.pii.detectors import (
    build_patterns,
    card_number_valid,
    column_kind,
    content_ignored_by_name,
    detect_by_name,
    detect_in_value,
    iban_valid,
    luhn_valid,
    normalize_name,
    table_of_people,
    tokenize_name,
)


@pytest.mark.parametrize(
    ("name", "tokens"),
    [
        ("user_email", ["user", "email"]),
        ("userEmail", ["user", "email"]),
        ("IPAddress", ["ip", "address"]),
        ("dateOfBirth", ["date", "of", "birth"]),
        ("password-digest", ["password", "digest"]),
        ("HTTPServerURL", ["http", "server", "url"]),
    ],
)
def test_tokenize(name, tokens):
    assert tokenize_name(name) == tokens
    assert normalize_name(name) == "_".join(tokens)


@pytest.mark.parametrize(
    ("column", "detector"),
    [
        ("user_email", "contact.email"),
        ("email_address", "contact.email"),
        ("phone_number", "contact.phone"),
        ("mobilePhone", "contact.phone"),
        ("birth_date", "personal.birth"),
        ("date_of_birth", "personal.birth"),
        ("dob", "personal.birth"),
        ("iban", "financial.bank"),
        ("iban_last4", "financial.bank"),
        ("first_name", "personal.name"),
        ("lastName", "personal.name"),
        ("ip_address", "network.ip"),
        ("last_sign_in_ip", "network.ip"),
        ("password_digest", "auth.secret"),
        ("encrypted_password", "auth.secret"),
        ("reset_password_token", "auth.secret"),
        ("api_token", "auth.secret"),
        ("billing_address", "contact.address"),
        ("zip_code", "contact.postal_code"),
        ("credit_card_last_4", "financial.card"),
        ("stripe_customer_id", "financial.processor_id"),
        ("ssn", "identity.national_id"),
    ],
)
def test_name_detection_catches_compound_names(column, detector):
    assert detector in [p.name for p in detect_by_name(column, "users")]


@pytest.mark.parametrize(
    "column", ["title", "company", "total", "hire_date", "album_id", "description", "mailer"]
)
def test_name_detection_ignores_innocent_names(column):
    assert detect_by_name(column, "anything") == []


def test_bare_name_only_in_person_tables():
    assert [p.name for p in detect_by_name("name", "users")] == ["personal.name_in_person_table"]
    assert [p.name for p in detect_by_name("name", "customerAccounts")] == ["personal.name_in_person_table"]
    assert detect_by_name("name", "artist") == []


def test_extra_patterns_from_rules():
    names, content = build_patterns(
        {
            "names": [
                {"pattern": "siren", "category": "identity", "severity": "medium"},
                {"pattern": r"^staff_.*", "category": "hr", "severity": "high"},
            ],
            "content": [{"name": "fr_siren", "regex": r"\b\d{3} ?\d{3} ?\d{3}\b", "severity": "low"}],
        }
    )
    assert [p.name for p in detect_by_name("company_siren", "x", names)] == ["identity.siren"]
    assert [p.name for p in detect_by_name("staff_matricule", "x", names)] == ["hr.^staff_.*"]
    assert detect_by_name("sirens_count", "x", names) == []
    assert "fr_siren" in detect_in_value("SIREN 732 829 320", content)
    with pytest.raises(ValueError, match="severity"):
        build_patterns({"names": [{"pattern": "x", "severity": "critical"}]})


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("41111111a1111111")


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("4111 1111 1111 1111", True),  # Visa test number
        ("5500-0000-0000-0004", True),  # Mastercard
        ("378282246310005", True),  # Amex
        ("4111 1111 1111 1112", False),  # bad checksum
        ("1234567812345670", False),  # Luhn-valid but no card brand prefix
        ("0000000000000000", False),  # Luhn-valid zeros
    ],
)
def test_card_numbers_need_brand_and_luhn(value, valid):
    assert card_number_valid(value) is valid
    assert ("card_number" in detect_in_value(f"paid with {value} yesterday")) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("FR76 3000 6000 0112 3456 7890 189", True),
        ("GB82 WEST 1234 5698 7654 32", True),
        ("DE89370400440532013000", True),
        ("FR76 3000 6000 0112 3456 7890 188", False),  # mod-97 fails
        ("DE8937040044053201300", False),  # wrong length for DE
        ("ZZ89370400440532013000", False),  # unknown country
    ],
)
def test_iban_mod97(value, valid):
    assert iban_valid(value) is valid
    assert ("iban" in detect_in_value(f"virement sur {value}.")) is valid


def test_a_token_that_only_begins_like_an_iban_is_not_one():
    """Random tokens (md5 digests, Active Storage keys, visit tokens) whose first characters pass the
    mod-97 check were flagged as IBANs: about one value in 300 of a Rails app's token columns."""
    iban = "DE89370400440532013000"
    assert "iban" in detect_in_value(f"{iban} BIC COBADEFFXXX")  # a code after a space: still an IBAN
    assert "iban" in detect_in_value(f"{iban}-2024")
    glued = [iban + "ab12", iban.lower() + "9f3c", "ad12" + "0" * 28]
    hits = [v for v in glued if "iban" in detect_in_value(v)]
    assert hits == [], hits
    import hashlib

    digests = [hashlib.md5(str(i).encode()).hexdigest() for i in range(20000)]  # noqa: S324
    assert [d for d in digests if "iban" in detect_in_value(d)] == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("contact: Bob.Smith+news@Example.co.uk", "email"),
        ("BOB@GMAIL.COM", "email"),
        ("appelez le 06 12 34 56 78", "phone_fr"),
        ("+33 6 12 34 56 78", "phone_fr"),
        ("0033612345678", "phone_fr"),
        ("+1 (780) 428-9482", "phone_e164"),
        ("+447911123456", "phone_e164"),
        ("from 192.168.12.7 at noon", "ipv4"),
        ("2001:db8:85a3::8a2e:370:7334", "ipv6"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", "jwt"),
        ("geo:48.8765,2.18967;u=12", "geo_uri"),
        ("publie mon adresse (57, boulevard Laporte, 20343 Robertdan) sans mon accord", "street_address"),
        ("livrer au 14 rue des Vinaigriers, 75010 Paris svp", "street_address"),
        ("Klaus-Werner-Hövel-Allee 77/56, 70384 Mittweida", "street_address"),
        ("Roggestraße 58/27\n33464 Essen", "street_address"),
        ("Reystrasse 36, 5254 Morges", "street_address"),
        ("2 Jones Road, E6J 3JB Dayside", "street_address"),
        ("1600 Pennsylvania Avenue, Washington, DC 20500", "street_address"),
        ("Location geo:-33.8688,151.2093 shared", "geo_uri"),
    ],
)
def test_content_true_positives(value, expected):
    assert expected in detect_in_value(value)


@pytest.mark.parametrize(
    "value",
    [
        "version 1.2.3",
        "999.12.1.1",
        "12:30:00",
        "order #123456789012",
        "total 42.50 EUR",
        "AC/DC",
        "user at home",
        "geo:0,0",
        "Meeting at 10 Main Street tomorrow",
        "room 12 avenue of light 12345 x",
        "Order 12345 Paris",
        "3 weg 12, 12345 berlin",
        "geo:95.5,2.1",
        "mygeo:48.8765,2.18967",
    ],
)
def test_content_false_positives(value):
    assert detect_in_value(value) == []


def test_a_column_whose_type_cannot_hold_the_thing_it_is_named_about_is_not_flagged():
    names = lambda column, kind="text": [p.name for p in detect_by_name(column, "users", kind=kind)]  # noqa: E731
    assert names("address_id") == ["contact.address"]  # a text column: anything
    assert names("address_id", "number") == names("country_uuid", "key") == names("city_fk", "number") == []
    assert names("emails_count", "number") == names("addresses_count", "number") == []
    # Devise's columns: the instants and flags about a password, a token, an e-mail, a phone
    for column in ("reset_password_sent_at", "password_changed_at", "token_expires_at", "phone_verified_at"):
        assert names(column, "temporal") == [], column
        assert names(column) != [], column  # as text it could hold anything
    assert names("email_verified", "boolean") == names("otp_required_for_login", "boolean") == []
    # named for what it is, whatever the type
    assert names("tax_id", "number") == ["identity.national_id"]
    assert names("phone", "number") == names("phone_number", "number") == ["contact.phone"]
    assert names("encrypted_password", "other") == ["auth.secret"]  # bytea holds anything
    # categories that describe the person whatever follows
    assert names("birth_year", "number") == names("birth_date", "temporal") == ["personal.birth"]
    assert names("salary_cents", "number") == ["financial.income"]
    assert names("gender_id", "number") == ["personal.demographic"]
    assert names("latitude_e6", "number") == ["location.geo"]
    assert column_kind("bool", "B", False) == "boolean"
    assert [column_kind(*t) for t in [("text", "S", True), ("int4", "N", False), ("timestamptz", "D", False),
            ("interval", "T", False), ("uuid", "U", False), ("bytea", "U", False)]] == [
        "text", "number", "temporal", "temporal", "key", "other"]  # fmt: skip


def test_counts_flags_templates_and_parts_of_an_email_are_not_the_thing_they_are_named_about():
    """django-oscar's schema failed the gate on ``num_orders_as_billing_address integer`` (a count),
    ``is_shipping_country boolean`` and ``email_body_template text`` (a template, which --suggest-rules
    turned into e-mail addresses)."""
    names = lambda column, kind="text": [p.name for p in detect_by_name(column, "t", kind=kind)]  # noqa: E731
    assert names("num_orders_as_billing_address", "number") == []
    assert names("num_orders_as_billing_address") == ["contact.address"]  # as text it could hold one
    assert names("is_shipping_country", "boolean") == names("phone", "boolean") == []
    for column in ("email_body_template", "email_subject_template", "email_body_html_template",
                   "address_format", "name_template"):  # fmt: skip
        assert names(column) == [], column
    for column in ("email_subject", "email_body", "email_html", "mail_message"):
        assert names(column) == [], column  # their content is scanned: an address, a phone, a name
    # what a number can be stays flagged, and what holds the thing itself
    assert names("num_tel", "number") == names("phone_number", "number") == ["contact.phone"]
    assert names("zip", "number") == ["contact.postal_code"]
    assert names("emails") == names("contact_email") == ["contact.email"]
    assert "contact.email" in names("email_address")
    assert names("subject_email") == ["contact.email"]  # the match takes the last token in
    assert names("address_text") == ["contact.address"]  # a part of an e-mail only after one


def test_numbered_address_lines_and_pictures_of_people_are_named_personal():
    """pagila's ``address.address2`` and ``staff.picture`` (a bytea photo) were not flagged."""
    names = lambda column, table="t": [p.name for p in detect_by_name(column, table)]  # noqa: E731
    for column in ("address2", "addr1", "street2", "address_2", "AddressLine2"):
        assert "contact.address" in names(column), column
    assert names("picture", "staff") == ["personal.photo_in_person_table"]
    assert names("photo_url", "users") == ["personal.photo_in_person_table"]
    assert names("picture", "products") == []  # a product's picture is nobody's face
    assert names("avatar_url", "comments") == ["personal.photo"]
    assert names("name", "staff") == ["personal.name_in_person_table"]


def test_what_a_session_store_keeps_is_named_personal():
    """Django's ``django_session.session_data`` and the ``data``/``payload`` of a Rails, Laravel or Flask
    ``sessions`` table hold who is logged in (and what the session remembers) encoded: base64, signed,
    compressed, so only the name can tell."""
    names = lambda column, table="t": [p.name for p in detect_by_name(column, table)]  # noqa: E731
    assert names("session_data", "django_session") == ["auth.session_data"]
    assert names("data", "sessions") == ["auth.session_data_in_session_table"]
    assert names("payload", "sessions") == ["auth.session_data_in_session_table"]
    assert names("data", "user_sessions") == ["auth.session_data_in_session_table"]
    assert names("data", "events") == [] and names("payload", "webhooks") == []


def test_keys_of_json_documents_are_judged_as_column_names():
    """A TOTP secret under "secret" (django-allauth's mfa_authenticator.data), names under "first_name",
    and "name" beside an e-mail are personal data or credentials no content detector sees."""
    from scalingo_staging_sync.pii.detectors import json_key_findings

    def found(document):
        return sorted((".".join(path), p.name) for path, p in json_key_findings(document))

    assert found({"secret": "JBSWY3DPEHPK3PXPJBSWY3DP", "type": "totp"}) == [("secret", "auth.secret")]
    # a page token or a short code is no credential; a secret is long and has no space
    assert found({"next_page_token": "CAUQAA", "token": "see the docs for details"}) == []
    profile = {"email": "a@b.example", "name": "Jean Dupont", "picture": "https://img.example/a.png"}
    assert found({"owner": profile, "plan": {"name": "Gold", "picture": "https://cdn.example/p.png"}}) == [
        ("owner.email", "contact.email"),
        ("owner.name", "personal.name_in_person_table"),
        ("owner.picture", "personal.photo_in_person_table"),
    ]
    assert found({"guests": [{"first_name": "Ann"}, {"first_name": ""}]}) == [
        ("guests.*.first_name", "personal.name")
    ]
    assert found({"tags": ["first_name"], "count": 3, "first_name": None}) == []  # values, not keys


@pytest.mark.parametrize(
    "value",
    [
        # a Rails app's polymorphic and STI type columns, ActiveJob class names: `::` is a valid IPv6
        # address (and `e::` too) when the match is not held to word edges
        "CommentNotifier::Notification",
        "ActionMailer::MailDeliveryJob",
        "Devise::Mailer",
        "Admin::User",
        "dead::beef",
        # a UUID's digits: a French phone number, a Luhn-valid card number grouped as no card is
        "04151108-40c7-c2c9-308c-4954d7ee656a",
        "7d0a3b65-0783-8862-6642-30fc4dc91622",
        "{7d0a3b65-0783-8862-6642-30fc4dc91622}",
        # an order number: 13 Luhn-valid digits with a Visa prefix, grouped 9-4 and glued to a letter
        "R412916409-1889",
        "412916409-1889",
    ],
)
def test_look_alikes_of_a_rails_app_are_not_flagged(value):
    assert detect_in_value(value) == []


def test_real_ips_cards_and_phones_are_still_found_next_to_the_look_alikes():
    assert "ipv6" in detect_in_value("from ::1 and fe80::1")
    assert "ipv6" in detect_in_value("client 2a01:cb00:8a1:5e00::12 connected")
    for card in ("4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "3782 822463 10005"):
        assert "card_number" in detect_in_value(f"paid with {card}."), card
    assert "card_number" not in detect_in_value("4111 1111-1111 1111")  # separators mixed: not written so
    assert "phone_fr" in detect_in_value("tel:0612345678.")
    assert "phone_fr" in detect_in_value("job 04151108-40c7-c2c9-308c-4954d7ee656a, call 06 12 34 56 78")


def test_a_persons_account_at_a_login_provider_is_flagged():
    """OmniAuth's users.uid (next to users.provider) is the person's id at Google or GitHub, and
    devise_token_auth's is their e-mail address; a uuid `uid` is the app's own id of the row."""
    names = lambda column, table="users", kind="text": [  # noqa: E731
        p.name for p in detect_by_name(column, table, kind=kind)
    ]
    assert names("uid") == ["identity.provider_uid_in_person_table"]
    assert names("uid", kind="key") == [] and names("uid", "oauth_applications") == []
    assert (
        names("google_uid", "accounts")
        == names("github_id", "settings", "number")
        == ["identity.provider_uid"]
    )
    assert names("facebook_user_id", "members", "number") == ["identity.provider_uid"]
    assert names("provider") == [] and names("guid") == []


def test_laravels_address_lines_and_cashiers_customer_ids_are_flagged():
    names = lambda column, table="users", kind="text": [  # noqa: E731
        p.name for p in detect_by_name(column, table, kind=kind)
    ]
    for column in ("line_1", "line_2", "address_1", "address_line_2", "street_2", "addressLine1", "line1"):
        assert names(column, "addresses") == ["contact.address"], column
    assert names("line_items", "orders") == [] and names("pipeline_2", "jobs") == []
    assert names("stripe_id") == ["financial.processor_id_in_person_table"]  # Cashier's "cus_..."
    assert names("processor_id", "pay_customers") == ["financial.processor_id_in_person_table"]
    assert names("stripe_id", "subscriptions") == [] and names("processor_id", "pay_charges") == []


def test_an_authjs_schema_is_read_as_what_it_holds():
    """Auth.js (NextAuth) with Prisma: ``Account.providerAccountId`` is the person's id at Google;
    ``User.emailVerified`` is a timestamp, ``Account.token_type`` is "Bearer"."""
    names = lambda column, table="Account", kind="text": [  # noqa: E731
        p.name for p in detect_by_name(column, table, kind=kind)
    ]
    assert names("providerAccountId") == ["identity.provider_uid"]
    assert names("provider_user_id", "identities") == ["identity.provider_uid"]
    assert names("emailVerified", "User", "temporal") == []
    assert (
        names("phone_confirmed_at", "users", "temporal")
        == names("last_password_change", "users", "temporal")
        == []
    )
    assert names("date_of_birth", "users", "temporal") == ["personal.birth"]  # what an instant can be
    assert names("card_expiry", "cards", "temporal") == ["financial.card"]
    assert names("token_type") == names("grant_type") == names("token_scope") == []
    assert names("access_token") == names("token") == names("password") == ["auth.secret"]


@pytest.mark.parametrize(
    ("column", "table", "expected"),
    [
        # a French schema (Scalingo's own market): nom / prénom, courriel, adresse, ville, naissance
        ("prenom", "adherents", "personal.name"),
        ("nom", "adherents", "personal.name_in_person_table"),
        ("nom", "utilisateurs", "personal.name_in_person_table"),
        ("nom_de_famille", "dossiers", "personal.name"),
        ("courriel", "contact", "contact.email"),
        ("telephone_portable", "salaries", "contact.phone"),
        ("adresse_livraison", "commande", "contact.address"),
        ("rue", "domicile", "contact.address"),
        ("ville", "commande", "contact.city"),
        ("pays", "commande", "contact.country"),
        ("date_naissance", "eleves", "personal.birth"),
        ("numero_secu", "salaries", "identity.national_id"),
        ("sexe", "patients", "personal.demographic"),
        ("vorname", "kunden", "personal.name"),
        ("apellidos", "clientes", "personal.name"),
    ],
)
def test_french_german_and_spanish_column_names(column, table, expected):
    assert expected in [p.name for p in detect_by_name(column, table)]


def test_a_products_nom_is_not_a_persons():
    assert (
        detect_by_name("nom", "produits") == [] and detect_by_name("nombre", "pedidos", kind="number") == []
    )
    assert detect_by_name("description", "produits") == detect_by_name("prix", "produits") == []


def test_an_aspnet_identity_schema_is_read_as_what_it_holds():
    """ASP.NET Core Identity on PostgreSQL (EF Core, PascalCase): AspNetUserTokens.Name is the token's
    name ("AuthenticatorKey"), its Value the secret; AspNetUserLogins.ProviderKey is the person's id at
    Google, ProviderDisplayName is "Google"; an owned type's BillingAddress_City is a city."""
    names = lambda column, table: [p.name for p in detect_by_name(column, table)]  # noqa: E731
    assert names("Name", "AspNetUserTokens") == []
    assert names("Value", "AspNetUserTokens") == ["auth.secret_in_token_table"]
    assert names("ProviderKey", "AspNetUserLogins") == ["identity.provider_uid"]
    assert names("ProviderDisplayName", "AspNetUserLogins") == []
    assert names("display_name", "users") == names("user_display_name", "posts") == ["personal.name"]
    assert names("BillingAddress_City", "Customers") == ["contact.city"]
    assert (
        names("BillingAddress_ZipCode", "Customers")
        == names("BillingAddress_PostalCode", "x")
        == ["contact.postal_code"]
    )
    assert names("BillingAddress_Country", "Customers") == ["contact.country"]
    assert names("BillingAddress_Street", "Customers") == ["contact.address"]
    assert names("EmailAddress", "Customers")[0] == "contact.email"
    # a table about people's things is not one of people; a table of people stays one
    assert names("name", "user_roles") == names("name", "customer_groups") == []
    assert names("name", "AspNetUsers") == names("name", "users_archive") == ["personal.name_in_person_table"]
    assert names("name", "user_roles person") == ["personal.name_in_person_table"]  # it has an e-mail column


def test_a_jhipster_schema_is_read_as_what_it_holds():
    """JHipster (Spring Boot, Liquibase): jhi_user.login ("jdupont12") is the person's handle, and
    created_by / last_modified_by / the audit events' principal copy it; a patient's antécédents are
    health data."""
    names = lambda column, table="jhi_user", kind="text": [  # noqa: E731
        p.name for p in detect_by_name(column, table, kind=kind)
    ]
    assert names("login") == names("user_login", "posts") == ["personal.login"]
    assert names("name", "servers") == []  # a login does not make a table one of people
    from scalingo_staging_sync.pii.detectors import table_of_people

    assert table_of_people("servers", [("login", "text"), ("name", "text")]) == "servers"
    assert (
        names("created_by")
        == names("last_modified_by")
        == names("createdBy", "Invoice")
        == ["personal.actor"]
    )
    assert (
        names("principal", "jhi_persistent_audit_event")
        == names("whodunnit", "versions")
        == ["personal.actor"]
    )
    assert names("created_by", kind="number") == []  # a user id
    assert names("principal_amount", "loans") == [] and names("login_provider", "logins") == []
    assert names("last_login", "users", "temporal") == names("login_count", "users", "number") == []
    assert names("antecedents", "patient") == names("groupe_sanguin", "patient") == ["medical.health"]
    assert names("mutuelle", "patient") == ["medical.insurance"]


def test_an_odoo_schema_is_read_as_what_it_holds():
    """Odoo 17: hr_employee.identification_id and ssnid are national ids, spouse_complete_name and
    emergency_contact name people, marital is a demographic; bank_account_id integer is the key of a
    bank account row, not an account number."""
    names = lambda column, table="hr_employee", kind="text": [  # noqa: E731
        p.name for p in detect_by_name(column, table, kind=kind)
    ]
    assert names("identification_id") == names("ssnid") == ["identity.national_id"]
    assert names("spouse_complete_name") == names("emergency_contact") == ["personal.name"]
    assert names("complete_name", "res_partner") == ["personal.name"]
    assert names("marital") == ["personal.demographic"]
    assert names("bank_account_id", kind="number") == names("emergency_contact_id", kind="number") == []
    assert names("tax_id", kind="number") == ["identity.national_id"]  # named for what it is
    assert names("salary_cents", kind="number") == ["financial.income"]  # whatever follows


def test_a_pretix_schema_is_read_as_what_it_holds():
    """pretix: names by role and their cached copies (attendee_name_cached, invoice_to_name, an
    invoice line's attendee_name), a bank transaction's payer, an address's name_cached."""
    names = lambda column, table: [p.name for p in detect_by_name(column, table)]  # noqa: E731
    assert names("attendee_name_cached", "pretixbase_orderposition") == ["personal.name"]
    assert (
        names("invoice_to_name", "pretixbase_invoice")
        == names("attendee_name", "invoiceline")
        == ["personal.name"]
    )
    assert names("payer", "banktransfer_banktransaction") == ["personal.name"]
    assert names("name_cached", "pretixbase_invoiceaddress") == ["personal.name_in_person_table"]
    assert names("name", "order_billingaddress") == ["personal.name_in_person_table"]
    assert (
        names("name_cached", "products") == names("product_name", "orders") == names("event_name", "x") == []
    )


def test_a_solidus_shop_and_a_supabase_auth_schema_are_read_as_what_they_hold():
    """Solidus: the cardholder's name on a stored card, a VAT id, a gateway's customer profile id;
    an EAV table of a user's attributes is not a table of people (its ``name`` is 'phone', not a
    person's). GoTrue: a token's URL, its endpoint's auth method and a refresh counter are not
    secrets; a category about a thing (``address_type``) is not the thing."""
    names = lambda column, table, kind="text": [  # noqa: E731
        p.name for p in detect_by_name(column, table, kind=kind)
    ]
    assert (
        names("name", "spree_credit_cards")
        == names("name", "payment_bankcard")
        == ["personal.cardholder_name"]
    )
    assert names("name", "spree_products") == []
    assert names("vat_id", "spree_addresses") == ["identity.national_id"]
    assert names("gateway_customer_profile_id", "spree_credit_cards") == ["financial.processor_id"]
    assert names("gateway_payment_profile_id", "spree_credit_cards") == ["financial.processor_id"]
    assert names("name", "user_attributes") == names("name", "customer_metadata") == []
    assert names("name", "users") == ["personal.name_in_person_table"]
    assert names("token_url", "custom_oauth_providers") == []
    assert names("token_endpoint_auth_method", "oauth_clients") == []
    assert names("refresh_token_counter", "sessions", kind="number") == []
    assert names("refresh_token_hmac_key", "sessions") == ["auth.secret"]
    assert (
        names("address_type", "addresses") == names("phone_type", "users") == names("email_status", "x") == []
    )
    assert names("marital_status", "employees") == ["personal.demographic"]  # the status itself
    assert (
        names("company", "spree_addresses")
        == names("company_name", "customers")
        == ["personal.company_in_person_table"]
    )
    assert names("company", "spree_products") == names("company", "invoices") == []
    assert names("phone_verified", "users") == ["contact.phone"]  # may hold the verified number


def test_live_credentials_of_known_services_are_found_in_any_text():
    """Solidus keeps the Stripe secret key in spree_payment_methods.preferences (YAML); a staging copy
    must not charge real cards with it. A PEM private key, AWS, GitHub, Slack keys alike; the words
    around them, or look-alikes without the service's prefix, are not."""
    yaml = (
        "---\n:server: production\n:secret_key: sk_live_51NxQ2bLkdIwHu7ixTs0Uq0bVlNzD8\n:test_mode: false\n"
    )
    assert "api_secret" in detect_in_value(yaml)
    for value in (
        "AKIAIOSFODNN7EXAMPLE",
        "token=ghp_1234567890abcdefghijABCDEFGHIJ123456",
        "xoxb-123456789012-abcdefABCDEF",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA",
        "-----BEGIN PRIVATE KEY-----",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ):
        assert "api_secret" in detect_in_value(value), value
    for value in (
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",  # a test key charges nothing
        "desk_live_session",
        "-----BEGIN PUBLIC KEY-----",
        "pk_live_51NxQ2bLkdIwHu7ixTs0Uq0bVlNzD8",  # publishable: public by design
        "Je suis dans le skate_live_park",
    ):
        assert "api_secret" not in detect_in_value(value), value


def test_a_product_code_is_not_a_card_or_a_phone_number():
    """Solidus' spree_variants.gtin: about one GTIN-13 in ten passes the card-number Luhn check."""
    assert "card_number" in detect_in_value("4006381333924")  # a valid GTIN-13 that passes Luhn too
    assert content_ignored_by_name("gtin", "card_number") and content_ignored_by_name("ean13", "card_number")
    assert content_ignored_by_name("barcode", "phone_fr") and content_ignored_by_name("isbn", "iban")
    assert not content_ignored_by_name("gtin", "email")
    assert not content_ignored_by_name("card_number", "card_number")
    assert not content_ignored_by_name("notes", "card_number")


def test_a_mastodon_instance_is_read_as_what_it_holds():
    """Mastodon: a hashtag's display name and a security key's nickname are the things' own; an
    avatar's file size is a number about a picture; OmniAuth's identities.uid is the provider's id of
    the person; a blurhash's '@' and '.' are not an e-mail address."""
    names = lambda column, table, kind="text": [  # noqa: E731
        p.name for p in detect_by_name(column, table, kind=kind)
    ]
    assert names("display_name", "tags") == names("nickname", "webauthn_credentials") == []
    assert table_of_people("tags", [("name", "text"), ("display_name", "text")]) == "tags"
    assert names("display_name", "accounts") == names("display_name", "users") == ["personal.name"]
    # a SAML claim's key (GoTrue's identity_data.custom_claims): the last segment, without underscore
    assert names("http://schemas.microsoft.com/identity/claims/displayname", "") == ["personal.name"]
    assert names("avatar_file_size", "accounts", kind="number") == []
    assert names("avatar_file_name", "accounts") == ["personal.photo"]
    assert names("uid", "identities") == ["identity.provider_uid_in_person_table"]
    assert names("uid", "identities", kind="key") == []
    assert content_ignored_by_name("blurhash", "email") and not content_ignored_by_name("bio", "email")
    assert not content_ignored_by_name("email_signature", "phone_fr")  # "Jean Dupont, 06 12 34 56 78"
    assert not content_ignored_by_name("weekly_digest", "email")


def test_an_id_in_a_url_path_is_not_a_card_number():
    """Mastodon's statuses.url ends with an 18-digit snowflake id; one in ten passes the Luhn check."""
    ids = [
        n for n in range(386416245366440500, 386416245366440600) if "card_number" in detect_in_value(str(n))
    ]
    assert ids  # the id alone looks like a card number
    assert "card_number" not in detect_in_value(f"https://mastodon.social/@jane/{ids[0]}")
    assert "card_number" in detect_in_value(f"paid with {ids[0]} yesterday")


def test_a_bound_on_an_age_is_a_setting_not_a_persons_age():
    """Mastodon's ``min_status_age`` (how old a post must be before it is deleted), a cache's
    ``max_age``, a product's ``minimum_age``: a threshold about ages, not anybody's age. A person's
    ``age`` and ``age_group`` stay flagged, whatever the type."""
    names = lambda column, kind="number": [p.name for p in detect_by_name(column, "accounts", kind=kind)]  # noqa: E731
    for column in ("min_status_age", "max_age", "minimum_age", "maximum_age", "age_limit", "age_min",
                   "cookie_max_age", "age_threshold"):  # fmt: skip
        assert "personal.age" not in names(column), column
    assert names("age") == names("age_years") == names("age", "text") == ["personal.age"]
    assert "personal.age" in names("age_group", "text")


def test_lower_case_glued_names_are_read_as_their_camel_case_spelling():
    """AdventureWorks ported to PostgreSQL lower-cases its PascalCase names: ``nationalidnumber``,
    ``passwordhash``, ``addressline1``, ``postalcode``, ``middlename`` were not flagged (its
    ``NationalIDNumber`` spelling was). A glued name is split only into the detectors' words, so
    ``postage`` (not post + age), ``healthcheck`` and ``emailpromotion`` stay as they are."""
    names = lambda column, kind="text": [p.name for p in detect_by_name(column, "person", kind=kind)]  # noqa: E731
    glued = {
        "nationalidnumber": "identity.national_id",
        "passwordhash": "auth.secret",
        "passwordsalt": "auth.secret",
        "addressline1": "contact.address",
        "postalcode": "contact.postal_code",
        "middlename": "personal.name",
        "maritalstatus": "personal.demographic",
        "phonenumber": "contact.phone",
        "emailaddress": "contact.email",
        "loginid": "personal.login",
        "modifiedby": "personal.actor",
        "lastsigninip": "network.ip",
        "encryptedpassword": "auth.secret",
        "otpsecret": "auth.secret",
        "demographics": "personal.demographic",
        "creditcardnumber": "financial.card",
    }
    for column, detector in glued.items():
        assert detector in names(column), column
        camel = "".join(part.capitalize() for part in normalize_name(column).split("_"))
        assert names(camel) == names(column), (column, camel)  # as its camelCase spelling
    assert names("dateofbirth", "temporal") == ["personal.birth"]
    assert normalize_name("addressline2") == "address_line2"
    for column in ("postage", "percentage", "healthcheck", "filename", "businessentityid", "rowguid"):
        assert normalize_name(column) == column, column
    assert names("emailpromotion", "number") == names("loginid", "number") == []


def test_a_persons_location_is_where_they_live():
    """Chatwoot's ``contacts.location`` ("Chauvet-sur-Mer, France") was not flagged; a location in a
    table of things (a warehouse's) is not a person's."""
    names = lambda column, table: [p.name for p in detect_by_name(column, table)]  # noqa: E731
    assert names("location", "contacts") == ["contact.location_in_person_table"]
    assert names("location", "user_profiles") == ["contact.location_in_person_table"]
    assert names("location", "warehouses") == []


def test_national_ids_of_more_countries_are_named():
    """Chatwoot's contacts kept a German ``steuer_id`` in their custom attributes, unflagged."""
    for column in ("steuer_id", "steuerId", "steuernummer", "codice_fiscale", "nif", "dni", "bsn", "pesel",
                   "cpf", "ni_number"):  # fmt: skip
        assert "identity.national_id" in [p.name for p in detect_by_name(column, "t")], column
    assert detect_by_name("nifty", "t") == detect_by_name("dnis", "t") == []


def test_the_strings_of_an_array_are_named_by_its_key():
    """``cc_emails: ["a@b.c"]`` (Chatwoot's messages): each address is flagged at ``cc_emails.*``."""
    from scalingo_staging_sync.pii.detectors import json_key_findings

    found = {(path, p.name) for path, p in json_key_findings({"cc_emails": ["a@b.test"], "tags": ["x"]})}
    assert found == {(("cc_emails", "*"), "contact.email")}


def test_a_custom_fields_display_name_is_not_a_persons():
    """Chatwoot's ``custom_attribute_definitions.attribute_display_name`` ("Date of birth") was masked
    as a full name, and the gate then took every contact's custom attributes for copies of names."""
    names = lambda column, table: [p.name for p in detect_by_name(column, table)]  # noqa: E731
    assert names("attribute_display_name", "custom_attribute_definitions") == []
    assert names("display_name", "custom_attribute_definitions") == names("field_display_name", "forms") == []
    assert names("display_name", "users") == ["personal.name"]


def test_second_factor_secrets_and_invite_keys_are_secrets():
    """Discourse's ``user_second_factors.data`` (a TOTP secret) and ``invites.invite_key`` stayed."""
    names = lambda column, table: [p.name for p in detect_by_name(column, table)]  # noqa: E731
    assert names("data", "user_second_factors") == ["auth.secret_in_token_table"]
    assert names("invite_key", "invites") == ["auth.secret"]
    assert names("data", "topics") == []


def test_the_id_at_a_single_sign_on_provider_is_named():
    """Discourse's ``single_sign_on_records.external_id`` stayed in staging."""
    names = lambda column, table, kind="text": [p.name for p in detect_by_name(column, table, kind=kind)]  # noqa: E731
    assert names("external_id", "single_sign_on_records") == ["identity.sso_external_id"]
    assert names("external_id", "oauth_identities", "number") == ["identity.sso_external_id"]
    assert names("external_id", "orders") == []


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("https://api.shop.test/chatwoot/events?token=9f625c2e0cd2b6b1addb7d997b424699", True),
        ("https://edi.vendor.test/orders?client=7&access_token=abcdefghijklmnop1234", True),
        ("https://ediuser:Passw0rd@edi.vendor.test/api", True),
        ("postgres://app:pw1@db.internal:5432/prod", True),
        ("https://example.com/page?key=short", False),
        ("https://maps.google.com/?q=48.0058375,-4.0866254", False),
        ("http://host:8080/path?page=2", False),
    ],
)
def test_a_url_carrying_a_credential_is_found(value, found):
    """Chatwoot's webhooks and bots (``...?token=9f62...``), AdventureWorks' vendor URLs with a password."""
    assert ("url_credential" in detect_in_value(value)) is found, value


def test_a_setting_about_secrets_is_not_a_secret():
    """Keycloak's ``realm`` row holds its token and OTP settings (``access_token_lifespan integer``,
    ``otp_policy_digits``, ``password_policy`` "length(8) and digits(1)", ``reset_credentials_flow``,
    the id of a flow): hashed or NULLed, the staging Keycloak no longer works. A secret named for what
    it is stays flagged, whatever follows it."""
    names = lambda column, kind="text": [p.name for p in detect_by_name(column, "realm", kind=kind)]  # noqa: E731
    for column, kind in (
        ("access_token_lifespan", "number"),
        ("access_token_life_implicit", "number"),
        ("refresh_token_max_reuse", "number"),
        ("otp_policy_digits", "number"),
        ("otp_policy_period", "number"),
        ("otp_policy_window", "number"),
        ("otp_policy_alg", "text"),
        ("password_policy", "text"),
        ("reset_credentials_flow", "text"),
        ("api_key_rotation", "text"),
        ("password_min_length", "number"),
    ):
        assert "auth.secret" not in names(column, kind), column
    for column in ("password", "otp_secret", "password_reset_token", "token_hash", "api_key_prefix",
                   "client_secret", "secret_data"):  # fmt: skip
        assert "auth.secret" in names(column), column
    assert "auth.secret" in names("pin", "number")


def test_a_theme_is_not_what_it_is_for_and_a_config_of_users_is_no_table_of_people():
    """Keycloak's ``realm.email_theme`` ("keycloak") is a look, not an address; its
    ``user_federation_config`` / ``user_federation_mapper`` rows configure an LDAP link: their ``name``
    ("bindCredential", "email") is a setting's."""
    assert not detect_by_name("email_theme", "realm")
    assert not detect_by_name("login_theme", "realm")
    for table in ("user_federation_config", "user_federation_mapper", "user_federation_mapper_config"):
        assert "personal.name_in_person_table" not in [p.name for p in detect_by_name("name", table)], table
    assert "personal.name_in_person_table" in [p.name for p in detect_by_name("name", "users")]


def test_migration_bookkeeping_is_recognized_by_its_name_and_every_column():
    from scalingo_staging_sync.pii.detectors import MIGRATION_TABLES, migration_bookkeeping

    liquibase = sorted(MIGRATION_TABLES["databasechangelog"][1])
    assert "Liquibase" in migration_bookkeeping("databasechangelog", liquibase)
    assert "Liquibase" in migration_bookkeeping("DATABASECHANGELOG", [c.upper() for c in liquibase])
    assert "Flyway" in migration_bookkeeping("flyway_schema_history", ["installed_by", "script", "success"])
    # a column the tool does not create: a table of the app's own, scanned like any
    assert migration_bookkeeping("databasechangelog", [*liquibase, "email"]) is None
    assert migration_bookkeeping("changelog", liquibase) is None


def test_keycloak_secrets_and_identity_provider_ids():
    """Keycloak keeps its realms' signing keys as base64 DER without PEM armour and identity
    providers' client secrets in key/value rows; its users' ids at an identity provider in
    ``federated_identity.federated_user_id`` and ``broker_link.broker_user_id``."""
    from scalingo_staging_sync.pii.detectors import detect_in_value

    assert "api_secret" in detect_in_value("MIIEogIBAAKCAQEAlPu1IbRk9ZxY9t41mJbLG7cQ3NMpZayQtRaPQRVKoFmBRHgP")
    assert "api_secret" in detect_in_value("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7")
    assert "api_secret" in detect_in_value("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")
    # a public key or a certificate is no secret
    assert "api_secret" not in detect_in_value("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAlPu1IbRk9ZxY9t41")
    assert "api_secret" not in detect_in_value("MIICqTCCAZECBgGPt2vXSjANBgkqhkiG9w0BAQsFADAYMRYwFAYDVQQDDA1t")
    for table, column in (("federated_identity", "federated_user_id"), ("broker_link", "broker_user_id")):
        assert "identity.sso_external_id" in [p.name for p in detect_by_name(column, table)], column


def test_the_secrets_of_a_table_of_settings_are_found_by_their_keys():
    """Keycloak's ``component_config(name, value)`` holds an LDAP bind password and the realm's private
    keys among ordinary settings; a reference to a vault, a flag or an empty value is no secret, nor a
    setting about a secret (``secretKeySize``)."""
    from scalingo_staging_sync.pii.detectors import key_value_columns, secret_keys

    assert key_value_columns(["id", "component_id", "name", "value"]) == ("name", "value")
    assert key_value_columns(["option_id", "option_name", "option_value", "autoload"]) == (
        "option_name",
        "option_value",
    )
    assert key_value_columns(["id", "name", "description"]) is None
    rows = [
        ("bindCredential", "Sup3r-s3cret"),
        ("connectionUrl", "ldaps://ldap.example.test"),
        ("privateKey", "MIIEogIBAAKCAQEAlPu1"),
        ("clientSecret", "${vault.idp_secret}"),
        ("password", ""),
        ("secretRequired", "true"),
        ("client.secret.creation.time", "1712345678"),
        ("client.secret.rotated", "xR4c8f0aQ1"),
        ("keySize", "2048"),
        ("secretKeySize", "32"),
    ]
    # a time about a secret, kept as text, could hold anything: its rows are masked too (harmless)
    assert secret_keys(rows) == [
        "bindCredential",
        "client.secret.creation.time",
        "client.secret.rotated",
        "privateKey",
    ]


def test_decidim_identity_documents_passwords_and_meeting_passwords():
    """Decidim keeps an identity document's number in its users' ``extended_data`` (beside the phone),
    former password hashes in ``previous_passwords`` (an array), and video meetings' URLs with their
    password (Zoom's ``?pwd=``). An invoice's ``document_number`` is not a person's."""
    from scalingo_staging_sync.pii.detectors import detect_in_value, json_key_findings

    found = json_key_findings({"phone": "+34 934 569 435", "document_number": "G63651753"})
    assert (("document_number",), "identity.document_number_in_person_table") in [
        (p, f.name) for p, f in found
    ]
    assert not [p.name for p in detect_by_name("document_number", "invoices")]
    assert "identity.national_id" in [p.name for p in detect_by_name("nie", "users")]
    assert "auth.secret" in [p.name for p in detect_by_name("previous_passwords", "users", kind="other")]
    assert "url_credential" in detect_in_value(
        "https://us02web.zoom.us/j/88366251649?pwd=YiRAZu_Bxj4S62ZzE4QlS5CGpqE3"
    )


def test_a_time_under_a_key_named_for_a_secret_is_no_secret():
    """A Decidim user's version (PaperTrail's ``object``) holds ``password_updated_at`` and
    ``reset_password_sent_at`` as ISO strings: times about the password, not secrets; a birth date
    written the same way is still a birth date, and a token still a token."""
    from scalingo_staging_sync.pii.detectors import json_key_findings

    found = {
        path[0]: p.name
        for path, p in json_key_findings(
            {
                "password_updated_at": "2023-10-06T20:23:55.206",
                "reset_password_sent_at": "2023-10-06 20:23:55+02:00",
                "birth_date": "1990-01-02",
                "reset_password_token": "b2f1c8e0a9d74e6f8c1b",
            }
        )
    }
    assert found == {"birth_date": "personal.birth", "reset_password_token": "auth.secret"}, found


def test_a_settings_word_under_an_email_key_and_a_version_under_a_phone_key_are_settings():
    """Mattermost's notify props hold ``{"email": "default", "email_threads": "all"}`` (what to send
    by e-mail) and its sessions ``{"mobile_version": "2.30.0"}``: settings, no address and no phone.
    An address, a phone written any way and a name under the same keys are still found."""
    from scalingo_staging_sync.pii.detectors import json_key_findings

    def found(document):
        return sorted((".".join(path), p.name) for path, p in json_key_findings(document))

    assert (
        found({"email": "default", "email_threads": "all", "push": "mention", "desktop_sound": "true"}) == []
    )
    assert found({"mobile_version": "2.30.0", "phone_verified": "false", "phone": "10.11"}) == []
    assert found(
        {
            "email": "julie.martin@example.org",
            "email_threads": "JULIE@EXAMPLE.ORG",
            "mobile": "06 12 34 56 78",
            "phone": "+49 (0)151 2345678",
            "username": "all",
        }
    ) == [
        ("email", "contact.email"),
        ("email_threads", "contact.email"),
        ("mobile", "contact.phone"),
        ("phone", "contact.phone"),
        ("username", "personal.name"),
    ]


def test_mattermosts_glued_secret_names_csrf_tokens_and_authors_are_flagged():
    """Mattermost lower-cases its names without a separator (``users.mfasecret``, the TOTP secret,
    beside ``clientsecret``), keeps a session's anti-forgery token in ``sessions.props.csrf``, and a
    webhook attachment names its author (``author_name``). A setting about the token is not one."""
    from scalingo_staging_sync.pii.detectors import json_key_findings

    assert "auth.secret" in [p.name for p in detect_by_name("mfasecret", "users")]
    assert "auth.secret" in [p.name for p in detect_by_name("totpsecret", "users")]
    assert "auth.secret" in [p.name for p in detect_by_name("xsrf_token", "sessions")]
    assert not detect_by_name("csrf_enabled", "settings")
    assert not detect_by_name("mfaactive", "users")
    found = {
        ".".join(path): p.name
        for path, p in json_key_findings(
            {
                "csrf": "emfpzca4sfr9ixctsqke6uzwwo",
                "platform": "Macintosh",
                "attachments": [{"author_name": "Alain Gimenez", "color": "#0052CC"}],
            }
        )
    }
    assert found == {"csrf": "auth.secret", "attachments.*.author_name": "personal.name"}, found


def test_a_phones_push_token_is_found():
    """Mattermost keeps the phone's Firebase push token in ``sessions.deviceid``
    (``android_rn-v2:<token>``), Synapse in ``pushers.pushkey``: with the app's server key, it sends
    that phone notifications. A
    token-looking value without FCM's ``:APA91b`` marker is not one."""
    token = (
        "8EEXOLhrD_j-WohJ-lAmL1AHcg0yUOIiGGL0Abw2:APA91b5k9rbwft1cgbbcmzsih5dfuyqjnseq8uqti6krdsyzyjtgg79uubu1bjh"
        "rh1m8gegyeob76cs5xy1se1nkgmm9hrco3zh3q7obeki8whf4tq7nunfdnkwmg8"
    )
    assert "api_secret" in detect_in_value(f"android_rn-v2:{token}")
    synapse = (
        "VXvOuUsRzPI+3Zv8B6MkWw:APA91b0tRUkRaE/m6YsGwh3ljvr78kF+sENFf+tPu3Ofu1Z3LxuN+GN0qplSBMQK1QH"
        + "x" * 40
    )
    assert "api_secret" in detect_in_value(synapse)  # Synapse's pushers.pushkey
    assert "api_secret" not in detect_in_value("android_rn-v2:" + "x" * 160)
    assert "api_secret" not in detect_in_value("APA91b is the prefix of a push token")
