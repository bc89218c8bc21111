"""Public identifiers: a type prefix and 20 random base32 characters (pprod_…, pak_…)."""

import secrets

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_id(prefix: str) -> str:
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(20))


# Named defaults for model fields (migrations cannot serialise lambdas).
def new_id_pak() -> str:
    return new_id("pak")


def new_id_pprod() -> str:
    return new_id("pprod")


def new_id_pver() -> str:
    return new_id("pver")


def new_id_psub() -> str:
    return new_id("psub")


def new_id_paud() -> str:
    return new_id("paud")


def new_id_pinv() -> str:
    return new_id("pinv")


def new_id_ppay() -> str:
    return new_id("ppay")


def new_id_ppm() -> str:
    return new_id("ppm")


def new_id_pcs() -> str:
    return new_id("pcs")


def new_id_pcpn() -> str:
    return new_id("pcpn")


def new_id_pwh() -> str:
    return new_id("pwh")


def new_id_pwhd() -> str:
    return new_id("pwhd")
