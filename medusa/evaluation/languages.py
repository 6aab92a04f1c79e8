"""IN22 language codes (FLORES-200 style) and their English names.

Codes name dataset columns/files and pick the language names written into prompts, so a
typo must fail early with the list of valid codes rather than later as a missing column.
"""

from __future__ import annotations

import re

from medusa.errors import MedusaError

# The 22 scheduled Indian languages covered by IN22 (Gala et al., 2023), plus English.
LANGUAGES: dict[str, str] = {
    "asm_Beng": "Assamese",
    "ben_Beng": "Bengali",
    "brx_Deva": "Bodo",
    "doi_Deva": "Dogri",
    "eng_Latn": "English",
    "gom_Deva": "Konkani",
    "guj_Gujr": "Gujarati",
    "hin_Deva": "Hindi",
    "kan_Knda": "Kannada",
    "kas_Arab": "Kashmiri",
    "mai_Deva": "Maithili",
    "mal_Mlym": "Malayalam",
    "mar_Deva": "Marathi",
    "mni_Mtei": "Manipuri",
    "npi_Deva": "Nepali",
    "ory_Orya": "Odia",
    "pan_Guru": "Punjabi",
    "san_Deva": "Sanskrit",
    "sat_Olck": "Santali",
    "snd_Deva": "Sindhi",
    "tam_Taml": "Tamil",
    "tel_Telu": "Telugu",
    "urd_Arab": "Urdu",
}

# The seed's pair, every command's default: Hindi sources translated into English.
SOURCE_LANG = "hin_Deva"
TARGET_LANG = "eng_Latn"

CODE_PATTERN = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
"""Shape of a FLORES-style code: ISO 639-3 language + ISO 15924 script."""


def check_language_code(code: str) -> str:
    """Return `code` unchanged if it is a known IN22 code; otherwise raise MedusaError."""
    if not isinstance(code, str) or not CODE_PATTERN.match(code) or code not in LANGUAGES:
        raise MedusaError(
            f"unknown language code {code!r}; use one of: {', '.join(sorted(LANGUAGES))}"
        )
    return code


def language_name(code: str) -> str:
    """English name of an IN22 language code (e.g. 'hin_Deva' -> 'Hindi'), for prompts."""
    return LANGUAGES[check_language_code(code)]
