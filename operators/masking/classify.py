"""Fail-closed detection: does a column's NAME look like it holds PII or PHI?

A column that the masking policy does not list is masked anyway when its name looks sensitive
(see policy.py). This module only judges names, never values.

How a name is judged:

1. It is split into lower-case words at every non-alphanumeric character (``_``, ``-``, ``.``,
   spaces), at camelCase boundaries and around digits: ``patientDOB`` -> patient, dob;
   ``e_mail`` -> e, mail; ``Address2`` -> address, 2; ``FILENAME`` -> filename.
2. A word is sensitive when it is one of `SENSITIVE_WORDS` or starts with one of
   `SENSITIVE_PREFIXES`. So is the concatenation of two adjacent words (``e_mail`` -> email,
   ``zip_code`` -> zipcode, ``social_security_number`` -> socialsecurity).
3. The word ``name``/``names`` is not sensitive right after one of `NON_PERSONAL_QUALIFIERS`
   (``file_name``, ``host_name``, ``table_name``, ``product_name``).

Matching whole words is what keeps ``filename``, ``hostname``, ``namespace``, ``label`` and
``rename_count`` out while ``first_name``, ``FirstName``, ``patient_name``, ``lab_result`` and
``dateOfBirth`` are in. One-word compounds are only sensitive when listed (``lastname``,
``username`` are; ``filename``, ``hostname`` are not). The lists lean towards masking: a false
positive costs one exemption with a written reason in the policy; a false negative leaks.
"""

from __future__ import annotations

import re

__all__ = [
    "NON_PERSONAL_QUALIFIERS",
    "SENSITIVE_PREFIXES",
    "SENSITIVE_WORDS",
    "sensitive_term",
    "split_words",
]

# Whole words (after splitting and lower-casing).
SENSITIVE_WORDS = frozenset({
    # person names
    "name", "names", "firstname", "lastname", "surname", "surnames", "fullname", "givenname",
    "middlename", "maidenname", "forename", "forenames", "displayname", "username", "nickname",
    # contact
    "mobile", "cellphone", "fax",
    # identifiers
    "ssn", "ssns", "socialsecurity", "passport", "mrn", "mrns",
    # addresses (an IP address is an identifier under HIPAA Safe Harbor and GDPR)
    "addr", "street", "zipcode", "postcode", "postalcode", "ipaddress", "ipaddr",
    # dates of birth
    "dob",
    # lab results (not a prefix: "label", "labour")
    "lab", "labs", "laboratory",
})

# Word beginnings.
SENSITIVE_PREFIXES = (
    "email",      # email, emails, emailaddress
    "phone",      # phone, phonenumber, phones
    "telephone",
    "address",    # address, addresses, addressline
    "birth",      # birth, birthdate, birthday, birthplace
    "diagnos",    # diagnosis, diagnoses, diagnostic
    "prescri",    # prescription, prescriber, prescribed
    "medic",      # medical, medication, medicare, medicaid
)

# "<qualifier>_name" names a thing, not a person.
NON_PERSONAL_QUALIFIERS = frozenset({
    "file", "host", "path", "dir", "directory", "table", "column", "field", "key", "type",
    "class", "schema", "keyspace", "database", "db", "index", "domain", "server", "node",
    "cluster", "service", "app", "application", "product", "brand", "company", "org",
    "organization", "organisation", "team", "device", "metric", "event", "tag", "queue",
    "topic", "bucket", "package", "module", "function", "method", "variable", "param",
    "parameter", "attribute", "job", "task", "stream", "role", "group", "project", "region",
    "zone", "datacenter", "dc", "rack", "bundle", "plugin", "image", "container", "pod",
    "namespace", "feature", "flag", "setting", "config", "template", "report",
})

_SEPARATORS = re.compile(r"[\W_]+")
# An upper-case run not followed by lower case (an acronym: DOB in patientDOB), a word with an
# optional capital, digits, or a run of other (non-ASCII) letters.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^\x00-\x7f]+")


def split_words(name: str) -> list[str]:
    """The lower-case words of a column name (see the module docstring)."""
    return [
        word.lower()
        for part in _SEPARATORS.split(name)
        if part
        for word in _WORD.findall(part)
    ]


def _is_sensitive(word: str) -> bool:
    return word in SENSITIVE_WORDS or word.startswith(SENSITIVE_PREFIXES)


def sensitive_term(name: str) -> str | None:
    """The word (or joined pair of words) that makes this name look like PII/PHI, or None.

    Case-insensitive and word-boundary aware; see the module docstring for the rules."""
    words = split_words(name)
    for i, word in enumerate(words):
        if word in ("name", "names") and i > 0 and words[i - 1] in NON_PERSONAL_QUALIFIERS:
            continue
        if _is_sensitive(word):
            return word
    for first, second in zip(words, words[1:], strict=False):
        if second in ("name", "names"):
            continue  # "file"+"name": judged by the qualifier rule above, not as "filename"
        joined = first + second
        if _is_sensitive(joined):
            return joined
    return None
