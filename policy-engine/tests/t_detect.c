/*
 * Unit tests for gd_detect: for each detector, valid samples in several
 * formats, invalid ones (a checksum or a range wrong) and near misses
 * (shapes that look close and must not match), with the spans checked.
 *
 * Each text is copied into a buffer of exactly its length, so that ASan
 * catches any read past text[len).
 */
#include "detect_gen.h"
#include "gd_detect.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXS 16

/* a short printable form of a sample for the test's name */
static const char *show(const char *s)
{
    static char buf[72];
    size_t k = 0;

    for (; *s && k < sizeof(buf) - 4; s++) {
        buf[k++] = (*s == '\n' || *s == '\r' || *s == '#') ? '|' : *s;
    }
    if (*s) {
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
    return buf;
}

static size_t run(gd_detector_e d, const char *text, gd_detect_span_t *sp,
                  size_t max)
{
    size_t len = strlen(text), n;
    char *copy = malloc(len ? len : 1);

    memcpy(copy, text, len);
    n = gd_detect(d, copy, len, sp, max);
    free(copy);
    return n;
}

/* exactly one match, and it is want (its first occurrence in text) */
static void one(gd_detector_e d, const char *text, const char *want)
{
    gd_detect_span_t sp[MAXS];
    size_t n = run(d, text, sp, MAXS);
    const char *w = strstr(text, want);
    size_t off = w ? (size_t)(w - text) : (size_t)-1;

    TAP_OK(n == 1 && sp[0].off == off && sp[0].len == strlen(want),
           "%s: matches [%s]", gd_detector_name(d), show(text));
    if (n != 1 || sp[0].off != off || sp[0].len != strlen(want)) {
        printf("#   got %zu matches", n);
        for (size_t k = 0; k < n && k < MAXS; k++) {
            printf(" %zu+%zu", sp[k].off, sp[k].len);
        }
        printf(", want %zu+%zu\n", off, strlen(want));
    }
}

/* no match */
static void none(gd_detector_e d, const char *text, const char *why)
{
    gd_detect_span_t sp[MAXS];
    size_t n = run(d, text, sp, MAXS);

    TAP_OK(n == 0, "%s: no match in [%s] (%s)", gd_detector_name(d), show(text),
           why);
    for (size_t k = 0; k < n && k < MAXS; k++) {
        printf("#   got %zu+%zu\n", sp[k].off, sp[k].len);
    }
}

/* exactly the spans off[i]+len[i] */
static void spans(gd_detector_e d, const char *text, size_t n,
                  const size_t *off, const size_t *len)
{
    gd_detect_span_t sp[MAXS];
    size_t got = run(d, text, sp, MAXS);
    int ok = got == n;

    for (size_t k = 0; ok && k < n; k++) {
        ok = sp[k].off == off[k] && sp[k].len == len[k];
    }
    TAP_OK(ok, "%s: %zu spans at the given offsets in [%s]",
           gd_detector_name(d), n, show(text));
    for (size_t k = 0; !ok && k < got && k < MAXS; k++) {
        printf("#   got %zu+%zu\n", sp[k].off, sp[k].len);
    }
}

static void test_names(void)
{
    int all = 1;

    for (int d = 0; d < GD_DET_LAST; d++) {
        const char *name = gd_detector_name((gd_detector_e)d);
        all &= name != NULL && gd_detector_find(name, strlen(name)) == d;
    }
    TAP_OK(all, "every detector has a name that finds it back");
    TAP_OK(gd_detector_name(GD_DET_LAST) == NULL, "no name out of range");
    TAP_OK(gd_detector_find("emai", 4) == -1 &&
               gd_detector_find("email2", 6) == -1 &&
               gd_detector_find("ipv4", 4) == GD_DET_IPV4 &&
               gd_detector_find("aws_access_key", 14) == GD_DET_AWS_ACCESS_KEY,
           "gd_detector_find takes exact names only");
    TAP_OK(gd_detect(GD_DET_EMAIL, "", 0, NULL, 0) == 0,
           "an empty text has no match");
}

static void test_email(void)
{
    gd_detector_e d = GD_DET_EMAIL;

    one(d, "mail me at alice@example.com please", "alice@example.com");
    one(d, "<john.doe+tag@mail.example.co.uk>",
        "john.doe+tag@mail.example.co.uk");
    one(d, "Contact: first_last-99@sub-domain.example.org.",
        "first_last-99@sub-domain.example.org");
    one(d, "x@ex-ample.museum", "x@ex-ample.museum");
    one(d, "\"user%dept@example.io\"", "user%dept@example.io");
    one(d, "...lead.dots@example.com", "lead.dots@example.com");
    {
        static const size_t off[] = {0, 17}, len[] = {15, 13};
        spans(d, "a.b@example.com, c@example.net", 2, off, len);
    }

    one(d,
        "\xe8\x81\x94\xe7\xb3\xbb"
        "alice@example.com"
        "\xe3\x80\x82",
        "alice@example.com");
    none(d, "user@localhost", "no dotted domain");
    none(d, "user@example.c", "a one-letter TLD");
    none(d, "user@example.c0m", "a TLD with a digit");
    none(d, "npm install lodash@4.17.21", "a package version");
    none(d, "user@10.0.0.1", "an IP literal, numeric TLD");
    none(d, "follow @example.com on social", "no local part");
    none(d, "a..b@example.com", "two dots in a row");
    none(d, "trailing.@example.com", "a local part ending in a dot");
    none(d, "user@-example.com", "a label starting with a hyphen");
    none(d, "user@example..com", "an empty label");
    none(d, "user@example.com_suffix", "inside a longer word");
    none(d, "a@b@example.com", "two at signs");
    none(d, "image@sha256:abcdef0123", "a container digest");
}

static void test_phone(void)
{
    gd_detector_e d = GD_DET_PHONE;

    one(d, "call +14155552671 now", "+14155552671");
    one(d, "call +1 415 555 2671 now", "+1 415 555 2671");
    one(d, "UK: +44 20 7946 0958.", "+44 20 7946 0958");
    one(d, "UK: +44 (0)20 7946 0958", "+44 (0)20 7946 0958");
    one(d, "tel:+33-1-23-45-67-89", "+33-1-23-45-67-89");
    one(d, "US +1 (415) 555-2671", "+1 (415) 555-2671");
    one(d, "office (555) 123-4567 ext", "(555) 123-4567");
    one(d, "office (555)123-4567", "(555)123-4567");
    one(d, "cell 555-123-4567", "555-123-4567");
    one(d, "cell 555.123.4567", "555.123.4567");
    one(d, "toll free 1-800-555-0199", "1-800-555-0199");
    one(d, "London 020 7946 0958", "020 7946 0958");
    one(d, "Paris 01 23 45 67 89", "01 23 45 67 89");
    one(d, "Berlin 030 12345678", "030 12345678");
    one(d, "from abroad 0044 20 7946 0958", "0044 20 7946 0958");
    one(d, "ref 2023 020 7946 0958", "020 7946 0958");
    one(d, "Tokyo 03-1234-5678", "03-1234-5678");
    one(d, "India +91 98765 43210", "+91 98765 43210");
    one(d, "(020) 7946 0958", "(020) 7946 0958");
    one(d, "\"phone\":\"+4915112345678\"", "+4915112345678");
    {
        static const size_t off[] = {0, 13}, len[] = {12, 12};
        spans(d, "555-123-4567 555-987-6543", 2, off, len);
    }

    none(d, "+0123456789", "a country code cannot start with 0");
    none(d, "+1234567", "E.164 with too few digits");
    none(d, "+1234567890123456", "E.164 with more than 15 digits");
    none(d, "order 5551234567", "a bare run of digits");
    none(d, "id 123456789012", "a long bare run of digits");
    none(d, "on 2023-01-05 at noon", "a date");
    none(d, "on 05/01/2023", "a slashed date");
    none(d, "at 2023-01-05 12:30:45", "a timestamp");
    none(d, "version 10.0.19041.1234", "a version number");
    none(d, "host 192.168.100.200", "an IPv4 address");
    none(d, "123-456-7890", "a NANP area code cannot start with 1");
    none(d, "555-123-45678", "a NANP number with a 5-digit line");
    none(d, "555-123-4567-89", "a longer dashed number");
    none(d, "12345-67890", "an order number");
    none(d, "1700000000 1700000001", "timestamps");
    none(d, "a555-123-4567", "inside a word");
    none(d, "price 1.234.567,89", "an amount");
}

static void test_card(void)
{
    gd_detector_e d = GD_DET_CARD;

    one(d, "visa 4111111111111111 exp", "4111111111111111");
    one(d, "visa 4111 1111 1111 1111.", "4111 1111 1111 1111");
    one(d, "visa 4111-1111-1111-1111", "4111-1111-1111-1111");
    one(d, "visa13 4000000000006", "4000000000006");
    one(d, "visa19 4111111111111111110", "4111111111111111110");
    one(d, "mc 5555 5555 5555 4444", "5555 5555 5555 4444");
    one(d, "mc 5105105105105100", "5105105105105100");
    one(d, "mc2 2223003122003222", "2223003122003222");
    one(d, "mc2 2720990000000007", "2720990000000007");
    one(d, "amex 3782 822463 10005", "3782 822463 10005");
    one(d, "amex 371449635398431", "371449635398431");
    one(d, "discover 6011111111111117", "6011111111111117");
    one(d, "discover 6011 0009 9013 9424", "6011 0009 9013 9424");
    one(d, "jcb 3530111333300000", "3530111333300000");
    one(d, "jcb 3566002020360505", "3566002020360505");
    one(d, "diners 3056 930902 5904", "3056 930902 5904");
    one(d, "diners 38520000023237", "38520000023237");
    one(d, "unionpay 6200000000000005", "6200000000000005");
    one(d, "maestro 6759649826438453", "6759649826438453");
    {
        static const size_t off[] = {0, 17}, len[] = {16, 19};
        spans(d, "4111111111111111 5555 5555 5555 4444", 2, off, len);
    }

    none(d, "4111111111111112", "Luhn wrong");
    none(d, "4111 1111 1111 1112", "Luhn wrong, grouped");
    none(d, "1234567812345670", "Luhn right, no brand");
    none(d, "9999999999999995", "Luhn right, no brand");
    none(d, "510000000000000008", "Mastercard of 18 digits");
    none(d, "34000000000000009", "Amex of 17 digits");
    none(d, "60110000000000000004", "20 digits");
    none(d, "41111111111111111111111", "a longer run");
    none(d, "order 4111-1111-1111-1111-22", "a longer dashed code");
    none(d, "41111 11111 11111 1", "groups of 5");
    none(d, "4111 1111-1111 1111", "mixed separators");
    none(d, "ts 1700000000000", "a millisecond timestamp");
    none(d, "v4111111111111111", "inside a word");
    none(d, "1.4111111111111111", "after a decimal point");
}

static void test_iban(void)
{
    gd_detector_e d = GD_DET_IBAN;

    one(d, "iban GB82WEST12345698765432 ok", "GB82WEST12345698765432");
    one(d, "IBAN: GB82 WEST 1234 5698 7654 32.", "GB82 WEST 1234 5698 7654 32");
    one(d, "DE89370400440532013000", "DE89370400440532013000");
    one(d, "DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 00");
    one(d, "FR1420041010050500013M02606", "FR1420041010050500013M02606");
    one(d, "NL91ABNA0417164300", "NL91ABNA0417164300");
    one(d, "BE68539007547034", "BE68539007547034");
    one(d, "(NO9386011117947)", "NO9386011117947");
    one(d, "CH9300762011623852957", "CH9300762011623852957");
    one(d, "IT60X0542811101000000123456", "IT60X0542811101000000123456");
    one(d, "MT84MALT011000012345MTLCAST001S",
        "MT84MALT011000012345MTLCAST001S");
    one(d, "SA0380000000608010167519", "SA0380000000608010167519");

    one(d, "\xe8\xb4\xa6\xe5\x8f\xb7GB82WEST12345698765432",
        "GB82WEST12345698765432");
    none(d, "GB82WEST12345698765433", "mod 97 wrong");
    none(d, "GB83WEST12345698765432", "check digits wrong");
    none(d, "GB82WEST1234569876543", "one character short");
    none(d, "GB82WEST123456987654321", "one character long");
    none(d, "ZZ82WEST12345698765432", "not a country");
    none(d, "gb82west12345698765432", "lower case");
    none(d, "GB82 WEST 1234 5698 765432", "broken grouping");
    none(d, "GB82WEST 1234 5698 7654 32", "mixed grouping");
    none(d, "XGB82WEST12345698765432", "inside a word");
    none(d, "DE00370400440532013000", "check digits 00");
    none(d, "ORDER12345678901234567890", "an order code");
}

static void test_ssn(void)
{
    gd_detector_e d = GD_DET_SSN;

    one(d, "ssn 123-45-6789 on file", "123-45-6789");
    one(d, "078-05-1121", "078-05-1121");
    one(d, "SSN: 123456789", "123456789");
    one(d, "Social Security number 123 45 6789", "123 45 6789");
    one(d, "my ssn is 665-12-0001", "665-12-0001");
    {
        static const size_t off[] = {0, 12}, len[] = {11, 11};
        spans(d, "123-45-6789 234-56-7890", 2, off, len);
    }

    none(d, "000-12-3456", "area 000");
    none(d, "666-12-3456", "area 666");
    none(d, "900-12-3456", "area 900-999");
    none(d, "999-12-3456", "area 900-999");
    none(d, "123-00-4567", "group 00");
    none(d, "123-45-0000", "serial 0000");
    none(d, "order 123456789", "9 digits without context");
    none(d, "call 123 45 6789", "spaced without context");
    none(d, "SSN: 1234567890", "10 digits");
    none(d, "123-45-67890", "a longer serial");
    none(d, "1-123-45-6789", "inside a longer number");
    none(d, "2023-12-1234", "a date-like code");
    none(d, "a123-45-6789", "inside a word");
    none(d, "assn 123456789", "the keyword inside a word");
}

static void test_ipv4(void)
{
    gd_detector_e d = GD_DET_IPV4;

    one(d, "host 192.168.1.1 up", "192.168.1.1");
    one(d, "0.0.0.0", "0.0.0.0");
    one(d, "255.255.255.255.", "255.255.255.255");
    one(d, "http://10.0.0.1:8080/x", "10.0.0.1");
    one(d, "[172.16.254.1]", "172.16.254.1");
    one(d, "::ffff:192.0.2.128", "192.0.2.128");
    {
        static const size_t off[] = {0, 8}, len[] = {7, 7};
        spans(d, "1.2.3.4,5.6.7.8", 2, off, len);
    }

    none(d, "256.1.1.1", "an octet over 255");
    none(d, "192.168.1", "three parts");
    none(d, "1.2.3.4.5", "a version of five parts");
    none(d, "version 1.2.3.4.5 released", "a version of five parts");
    none(d, "v1.2.3.4", "a version string");
    none(d, "192.168.01.1", "a leading zero");
    none(d, "1.2.3.4a", "inside a word");
    none(d, "10.0.0.1000", "a four-digit octet");
    none(d, "pi 3.14159", "a decimal");
    none(d, "x.1.2.3.4", "after a dotted word");
}

static void test_ipv6(void)
{
    gd_detector_e d = GD_DET_IPV6;

    one(d, "addr 2001:0db8:85a3:0000:0000:8a2e:0370:7334 up",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334");
    one(d, "addr 2001:db8::8a2e:370:7334.", "2001:db8::8a2e:370:7334");
    one(d, "lo ::1", "::1");
    one(d, "link fe80::1%eth0", "fe80::1");
    one(d, "[2001:db8::1]:443", "2001:db8::1");
    one(d, "mapped ::ffff:192.0.2.128", "::ffff:192.0.2.128");
    one(d, "ip:2001:DB8::CAFE", "2001:DB8::CAFE");

    none(d, "at 12:30:45", "a time");
    none(d, "mac 00:1a:2b:3c:4d:5e", "a MAC address");
    none(d, "std::vector<int>", "a C++ scope");
    none(d, "a ::: b", "colons only");
    none(d, "2001:db8::1::2", "two ::");
    none(d, "2001:db8:0:0:0:0:0:0:1", "nine groups");
    none(d, "12345::1", "a group of five digits");
    none(d, "deadbeefcafebabe", "a hex string");
    none(d, "gfe80::1", "inside a word");
}

static const char pem_rsa[] =
    "key:\n-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----\ntrailer";

static void test_private_key(void)
{
    gd_detector_e d = GD_DET_PRIVATE_KEY;
    const char *b = strstr(pem_rsa, "-----BEGIN");
    const char *e = strstr(pem_rsa, "\ntrailer");

    {
        size_t off[] = {(size_t)(b - pem_rsa)}, len[] = {(size_t)(e - b)};
        spans(d, pem_rsa, 1, off, len);
    }
    one(d,
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
        "-----END PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
        "-----END PRIVATE KEY-----");
    one(d,
        "x -----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIB\\n-----END EC PRIVATE "
        "KEY----- y",
        "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIB\\n-----END EC PRIVATE "
        "KEY-----");
    one(d,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----\n",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----");
    one(d,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0w\n"
        "-----END ENCRYPTED PRIVATE KEY-----",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0w\n"
        "-----END ENCRYPTED PRIVATE KEY-----");
    one(d,
        "-----BEGIN DSA PRIVATE KEY-----\nMIIBuwIBAAKBgQ\n"
        "-----END DSA PRIVATE KEY-----",
        "-----BEGIN DSA PRIVATE KEY-----\nMIIBuwIBAAKBgQ\n"
        "-----END DSA PRIVATE KEY-----");
    /* truncated: from BEGIN to the end of its body */
    one(d, "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1Lf\n\n",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1Lf");

    none(d,
         "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n"
         "-----END PUBLIC KEY-----",
         "a public key");
    none(d,
         "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkq\n"
         "-----END CERTIFICATE-----",
         "a certificate");
    none(d, "the words BEGIN RSA PRIVATE KEY in prose", "no PEM line");
    none(d, "-----BEGIN RSA PRIVATE KEY----", "a short dash run");
}

static const char jwt_hs256[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6"
    "IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_"
    "adQssw5c";

static void test_jwt(void)
{
    gd_detector_e d = GD_DET_JWT;
    char buf[512];

    snprintf(buf, sizeof(buf), "Authorization: Bearer %s", jwt_hs256);
    one(d, buf, jwt_hs256);
    snprintf(buf, sizeof(buf), "{\"token\":\"%s\"}", jwt_hs256);
    one(d, buf, jwt_hs256);
    /* alg none: an empty signature */
    one(d, "t=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. end",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.");
    /* JWE compact: five parts */
    one(d,
        "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.OKOawDo13gRp2o."
        "48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpz."
        "XFBoMYUZodetZdvTiFvSkQ",
        "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.OKOawDo13gRp2o."
        "48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpz."
        "XFBoMYUZodetZdvTiFvSkQ");

    none(d, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0",
         "two parts");
    none(d, "eyJ0eXAiOiJKV1QiLCJraWQiOiJ4In0.eyJzdWIiOiJ4In0.c2ln",
         "a header without alg");
    none(d, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVC.eyJzdWIiOiJ4In0.c2ln",
         "a header that is not JSON");
    none(d, "eyJhbGciOiJIUzI1NiJ9", "a lone base64 JSON object");
    none(d, "eyJ.eyJ.eyJ", "too short to decode");
    none(d, "xeyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln", "inside a word");
    none(d, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln.a.b.c", "six parts");
    none(d, "eyJhbGciOiJub25lIn0..c2ln", "an empty payload");
    none(d, "file.tar.gz and a.b.c", "dotted words");
}

static void test_aws(void)
{
    gd_detector_e d = GD_DET_AWS_ACCESS_KEY;

    one(d, "aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE");
    one(d, "\"ASIAY34FZKBOKMUTVV7A\"", "ASIAY34FZKBOKMUTVV7A");
    one(d, "AROA2345672345672345", "AROA2345672345672345");
    one(d, "key=AIDAJQABLZS4A3QDU576;", "AIDAJQABLZS4A3QDU576");

    none(d, "AKIAIOSFODNN7EXAMPL", "15 characters after the prefix");
    none(d, "AKIAIOSFODNN7EXAMPLEX", "17 characters after the prefix");
    none(d, "AKIAIOSFODNN0EXAMPLE", "a 0 is not base32");
    none(d, "AKIAIOSFODNN8EXAMPLE", "an 8 is not base32");
    none(d, "akiaiosfodnn7example", "lower case");
    none(d, "ABCDIOSFODNN7EXAMPLE", "an unknown prefix");
    none(d, "XAKIAIOSFODNN7EXAMPLE", "inside a word");
}

static void test_github(void)
{
    gd_detector_e d = GD_DET_GITHUB_TOKEN;

    one(d, "token ghp_1234567890abcdefghijABCDEFGHIJ123456 x",
        "ghp_1234567890abcdefghijABCDEFGHIJ123456");
    one(d, "gho_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "gho_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789");
    one(d, "\"ghs_ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ\"",
        "ghs_ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ");
    one(d, "ghu_0123456789012345678901234567890123ab",
        "ghu_0123456789012345678901234567890123ab");
    one(d, "ghr_0123456789012345678901234567890123ab",
        "ghr_0123456789012345678901234567890123ab");
    one(d,
        "pat github_pat_11ABCDEFG0123456789abc_"
        "abcdefghijABCDEFGHIJ0123456789abcdefghijABCDEFGHIJ012345678 end",
        "github_pat_11ABCDEFG0123456789abc_"
        "abcdefghijABCDEFGHIJ0123456789abcdefghijABCDEFGHIJ012345678");

    none(d, "ghp_1234567890abcdefghijABCDEFGHIJ12345", "35 characters");
    none(d, "ghp_1234567890abcdefghijABCDEFGHIJ1234567", "37 characters");
    none(d, "ghx_1234567890abcdefghijABCDEFGHIJ123456", "an unknown prefix");
    none(d, "ghp_1234567890abcdefghij-BCDEFGHIJ123456", "a dash inside");
    none(d, "xghp_1234567890abcdefghijABCDEFGHIJ123456", "inside a word");
    none(d, "github_pat_11ABCDEFG0123456789abc_short", "a short pat");
}

static void test_slack(void)
{
    gd_detector_e d = GD_DET_SLACK_TOKEN;

    one(d, "SLACK=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx");
    one(d,
        "xoxp-123456789012-123456789012-123456789012-"
        "0123456789abcdef0123456789abcdef",
        "xoxp-123456789012-123456789012-123456789012-"
        "0123456789abcdef0123456789abcdef");
    one(d, "xoxa-2-123456789012-abcdefABCDEF123456",
        "xoxa-2-123456789012-abcdefABCDEF123456");
    one(d,
        "hook https://hooks.slack.com/services/T00000000/B00000000/"
        "XXXXXXXXXXXXXXXXXXXXXXXX end",
        "https://hooks.slack.com/services/T00000000/B00000000/"
        "XXXXXXXXXXXXXXXXXXXXXXXX");

    none(d, "xoxb-", "a bare prefix");
    none(d, "xoxb-123456789012", "one part");
    none(d, "xoxc-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
         "an unknown type");
    none(d, "xoxb-abc-def-AbCdEfGhIjKlMnOpQrStUvWx", "a team id not numeric");
    none(d, "xoxb-1-2-abc", "too short");
    none(d, "axoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
         "inside a word");
    none(d, "https://hooks.slack.com/services/T000/B000/XXXX", "a short hook");
}

static void test_secret(void)
{
    gd_detector_e d = GD_DET_SECRET;

    one(d, "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
    one(d, "api key: sk_live_4eC39HqLyjWDarjtT1zdp7dc end",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc");
    one(d, "\"Zx9Qm2Lk7Vb4Np8Rt6Yw3Hs1\"", "Zx9Qm2Lk7Vb4Np8Rt6Yw3Hs1");
    one(d, "secret=Kq3vN8xP2mR7tY5wZ1bC4dF6gH9j==",
        "Kq3vN8xP2mR7tY5wZ1bC4dF6gH9j==");
    one(d, "pw k3j9x2m8p4q7w1z5n6b0h7y4 ok", "k3j9x2m8p4q7w1z5n6b0h7y4");

    none(d, "correcthorsebatterystaple is a passphrase", "a plain word");
    none(d, "getUserAccountSettingsHandler", "a camelCase identifier");
    none(d, "MyVeryLongCamelCaseFunctionName2", "an identifier with a digit");
    none(d, "/usr/local/lib/python3/site-packages", "a path");
    none(d, "550e8400-e29b-41d4-a716-446655440000", "a UUID");
    none(d, "da39a3ee5e6b4b0d3255bfef95601890afd80709", "a SHA-1 in hex");
    none(d, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
         "a SHA-256 in hex");
    none(d, "VGhpcyBpcyBhIHRlc3Qgb2YgYmFzZTY0IGVuY29kaW5nIG9mIHBsYWluIHRleHQu",
         "base64 of ordinary text");
    none(d, "Zx9Qm2Lk7Vb4Np8Rt6", "shorter than the minimum");
    none(d, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1", "low entropy");
    none(d, "AKIAIOSFODNN7EXAMPLE", "an AWS key id (its own detector)");
    none(d, "ghp_1234567890abcdefghijABCDEFGHIJ123456", "a GitHub token");
    none(d, jwt_hs256, "a JWT (its own detector)");
    none(d, pem_rsa, "the lines of a private key block");
    {
        char buf[512];
        const char *after = "then Kq3vN8xP2mR7tY5wZ1bC4dF6gH9j";

        snprintf(buf, sizeof(buf), "Zx9Qm2Lk7Vb4Np8Rt6Yw3Hs1 %s %s", pem_rsa,
                 after);
        {
            size_t off[] = {0, strlen(buf) - 28}, len[] = {24, 28};
            spans(d, buf, 2, off, len);
        }
    }
    none(d, "12345678901234567890123", "digits only");
    none(d, "2023-01-05T12:30:45.123456Z", "a timestamp");
    none(d, "order-2023-000123-ABCDEF-000045", "an order number");
}

/* invisible: runs of zero-width, bidi-control and tag characters */
static void test_invisible(void)
{
    gd_detector_e d = GD_DET_INVISIBLE;

    /* "ig" ZWSP "nore": one run of 3 bytes at 2 */
    spans(d, "ig\xe2\x80\x8bnore", 1, (size_t[]){2}, (size_t[]){3});
    /* two tag characters then text: one run of 8 bytes */
    spans(d, "hi\xf3\xa0\x81\x89\xf3\xa0\x81\xa7!", 1, (size_t[]){2},
          (size_t[]){8});
    /* RLO ... PDF: two runs */
    spans(d,
          "a\xe2\x80\xae"
          "bc\xe2\x80\xac"
          "d",
          2, (size_t[]){1, 6}, (size_t[]){3, 3});
    /* ZWJ next to ASCII counts, a BOM inside the text counts */
    spans(d,
          "a\xe2\x80\x8d"
          "b",
          1, (size_t[]){1}, (size_t[]){3});
    spans(d, "ab\xef\xbb\xbf", 1, (size_t[]){2}, (size_t[]){3});
    /* two joiners in a row between emoji count */
    spans(d, "\xf0\x9f\x91\xa8\xe2\x80\x8d\xe2\x80\x8d\xf0\x9f\x91\xa9", 1,
          (size_t[]){4}, (size_t[]){6});

    none(d,
         "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f"
         "\x91\xa7",
         "ZWJ between emoji (a family)");
    none(d, "\xe0\xa4\x95\xe0\xa5\x8d\xe2\x80\x8d\xe0\xa4\xb7",
         "ZWJ inside Devanagari");
    none(d,
         "\xd9\x85\xdb\x8c\xe2\x80\x8c\xd8\xae\xd9\x88\xd8\xa7\xd9\x87\xd9"
         "\x85",
         "ZWNJ inside Persian");
    none(d, "hy\xc2\xadphen", "soft hyphen inside a word");
    none(d, "\xef\xbb\xbfhello", "a byte order mark that starts the text");
    /* England's flag: U+1F3F4 + "gbeng" as tags + cancel tag */
    none(d,
         "\xf0\x9f\x8f\xb4\xf3\xa0\x81\xa7\xf3\xa0\x81\xa2\xf3\xa0\x81\xa5"
         "\xf3\xa0\x81\xae\xf3\xa0\x81\xa7\xf3\xa0\x81\xbf",
         "the tag sequence of a subdivision flag");
    /* the same tags without the flag count */
    spans(d, "\xf3\xa0\x81\xa7\xf3\xa0\x81\xa2\xf3\xa0\x81\xbf", 1,
          (size_t[]){0}, (size_t[]){12});
    none(d, "plain text, \xc3\xa9t\xc3\xa9 \xe2\x80\x94 nothing hidden",
         "ordinary text");
    none(d, "\xe2\x80", "a cut sequence");
}

/* a random text of printable and some special bytes: no crash, spans ok */
static void test_random(void)
{
    static const char alpha[] = "0123456789+-.@ :()/abcdefxyzAKIAghp_=eyJ\n"
                                "-----BEGIN PRIVATE KEY-----";
    gd_detect_span_t sp[4];
    unsigned seed = 12345;
    int ok = 1;

    for (int round = 0; round < 2000 && ok; round++) {
        size_t len = (size_t)(rand_r(&seed) % 200);
        char *t = malloc(len ? len : 1);

        for (size_t k = 0; k < len; k++) {
            t[k] = alpha[rand_r(&seed) % (sizeof(alpha) - 1)];
        }
        for (int dd = 0; dd < GD_DET_LAST; dd++) {
            size_t n = gd_detect((gd_detector_e)dd, t, len, sp, 4), end = 0;
            for (size_t k = 0; k < n && k < 4; k++) {
                ok &= sp[k].len > 0 && sp[k].off >= end &&
                      sp[k].off + sp[k].len <= len;
                end = sp[k].off + sp[k].len;
            }
        }
        free(t);
    }
    TAP_OK(ok, "random texts: spans in bounds, in order, not overlapping");
}

/*
 * Adversarial texts of 1 MiB (a pattern repeated): every detector ends,
 * in about linear time (the time is printed, not asserted).
 */
static void test_adversarial(void)
{
    static const char *const pat[] = {
        "-----BEGIN PRIVATE KEY-----.",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
        "eyJ.",
        "eyJhbGciOiJub25lIn0",
        "a@",
        "a.b@c",
        ":",
        "1:",
        "1.",
        "1 ",
        "+1 ",
        "(1",
        "AKIA",
        "ghp_",
        "xoxb-1-",
        "hooks.slack.com/services/T",
        "GB82 ",
        "aZ9+",
        "SSN 1",
    };
    size_t size = 1024 * 1024;
    char *t = malloc(size);
    gd_detect_span_t sp[4];
    double worst = 0;

    for (size_t p = 0; p < sizeof(pat) / sizeof(pat[0]); p++) {
        size_t pl = strlen(pat[p]);
        struct timespec a, b;
        double secs;

        for (size_t k = 0; k < size; k++) {
            t[k] = pat[p][k % pl];
        }
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int dd = 0; dd < GD_DET_LAST; dd++) {
            gd_detect((gd_detector_e)dd, t, size, sp, 4);
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        secs = (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
        if (secs > worst) {
            worst = secs;
        }
    }
    free(t);
    TAP_OK(1,
           "adversarial 1 MiB texts: every detector ends (slowest: all "
           "%d in %.2f s, ASan build)",
           GD_DET_LAST, worst);
}

/*
 * The differential test: every detector's spans over a large sample set
 * agree with tests/detect.golden, which the detectors as they were before
 * their speed-up (commit "t_detect: golden file ...") wrote.  The samples:
 * GOLD_TEXTS texts of detect_gen.h (a fixed seed), hashed by groups of
 * GOLD_GROUP, then every line of t/corpus/prompt-injection/ and every file
 * of bench/data/, each keyed by the hash of its text (a line that is not
 * in the golden file is counted, not compared).  GD_DETECT_GOLDEN_WRITE=1
 * writes the file instead (only ever with a reference implementation).
 */
#define GOLD_TEXTS 8192
#define GOLD_GROUP 16
#define GOLD_CAP 2048
#define GOLD_FILE GD_TEST_DATA "/../../policy-engine/tests/detect.golden"

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *u = p;

    for (size_t k = 0; k < n; k++) {
        h = (h ^ u[k]) * 0x100000001b3ull;
    }
    return h;
}

/* the hash of every detector's spans over text[0..len) (a copy of
   exactly len bytes, for ASan); counts[d] += the matches of d */
static uint64_t gold_results(uint64_t h, const char *text, size_t len,
                             size_t *counts)
{
    gd_detect_span_t sp[64];
    char *copy = malloc(len ? len : 1);

    memcpy(copy, text, len);
    for (int d = 0; d < GD_DET_LAST; d++) {
        size_t n = gd_detect((gd_detector_e)d, copy, len, sp, 64);
        uint64_t v[2] = {(uint64_t)d, (uint64_t)n};

        h = fnv(h, v, sizeof(v));
        for (size_t k = 0; k < n && k < 64; k++) {
            v[0] = sp[k].off;
            v[1] = sp[k].len;
            h = fnv(h, v, sizeof(v));
        }
        if (counts) {
            counts[d] += n;
        }
    }
    free(copy);
    return h;
}

typedef struct {
    uint64_t key, val;
} gold_kv_t;

static int gold_cmp(const void *a, const void *b)
{
    const gold_kv_t *x = a, *y = b;

    return (x->key > y->key) - (x->key < y->key);
}

/* the texts of the corpus: each line of the two JSONL files, each file of
   bench/data/ whole; f(key, text, len, arg) for each */
static void gold_corpus(void (*f)(const char *, size_t, void *), void *arg)
{
    static const char *const files[] = {
        GD_TEST_DATA "/../corpus/prompt-injection/benign.jsonl",
        GD_TEST_DATA "/../corpus/prompt-injection/malicious.jsonl",
        GD_TEST_DATA "/../../bench/data/chat-1k.json",
    };

    for (size_t k = 0; k < sizeof(files) / sizeof(files[0]); k++) {
        FILE *fp = fopen(files[k], "rb");
        static char buf[1 << 20];
        size_t n, s = 0;

        if (fp == NULL) {
            continue;
        }
        n = fread(buf, 1, sizeof(buf), fp);
        fclose(fp);
        if (k == 2) {
            f(buf, n, arg);
            continue;
        }
        for (size_t i = 0; i <= n; i++) {
            if (i == n || buf[i] == '\n') {
                if (i > s) {
                    f(buf + s, i - s, arg);
                }
                s = i + 1;
            }
        }
    }
}

typedef struct {
    FILE *out;     /* writing */
    gold_kv_t *kv; /* reading: the golden corpus entries, sorted */
    size_t nkv, same, differ, unknown;
} gold_ctx_t;

static void gold_corpus_one(const char *t, size_t n, void *arg)
{
    gold_ctx_t *c = arg;
    gold_kv_t k = {fnv(0xcbf29ce484222325ull, t, n), 0}, *hit;

    k.val = gold_results(0xcbf29ce484222325ull, t, n, NULL);
    if (c->out) {
        fprintf(c->out, "c %016llx %016llx\n", (unsigned long long)k.key,
                (unsigned long long)k.val);
        return;
    }
    hit = bsearch(&k, c->kv, c->nkv, sizeof(k), gold_cmp);
    if (hit == NULL) {
        c->unknown++;
    } else if (hit->val == k.val) {
        c->same++;
    } else {
        c->differ++;
        printf("#   corpus text differs: [%s]\n", show(t));
    }
}

static void test_golden(void)
{
    static uint64_t want[GOLD_TEXTS / GOLD_GROUP], got[GOLD_TEXTS / GOLD_GROUP];
    size_t counts[GD_DET_LAST] = {0}, want_counts[GD_DET_LAST] = {0};
    size_t ngroups = GOLD_TEXTS / GOLD_GROUP, bad = 0, bytes = 0;
    gold_ctx_t c = {0};
    gen_rng_t r = {20261202};
    char *text = malloc(GOLD_CAP), line[128];
    int write = getenv("GD_DETECT_GOLDEN_WRITE") != NULL, have = 0;
    FILE *fp;

    for (size_t g = 0; g < ngroups; g++) {
        uint64_t h = 0xcbf29ce484222325ull;

        for (size_t k = 0; k < GOLD_GROUP; k++) {
            size_t n = gen_text(&r, text, GOLD_CAP);

            bytes += n;
            h = gold_results(h, text, n, counts);
        }
        got[g] = h;
    }
    free(text);

    if (write) {
        fp = fopen(GOLD_FILE, "w");
        TAP_OK(fp != NULL, "golden: writes %s", GOLD_FILE);
        if (fp == NULL) {
            return;
        }
        fprintf(fp, "# t_detect's golden file (tests/t_detect.c, "
                    "test_golden): g GROUP HASH, n DETECTOR MATCHES, "
                    "c TEXT-HASH HASH\n");
        for (size_t g = 0; g < ngroups; g++) {
            fprintf(fp, "g %zu %016llx\n", g, (unsigned long long)got[g]);
        }
        for (int d = 0; d < GD_DET_LAST; d++) {
            fprintf(fp, "n %d %zu\n", d, counts[d]);
        }
        c.out = fp;
        gold_corpus(gold_corpus_one, &c);
        fclose(fp);
        return;
    }

    fp = fopen(GOLD_FILE, "r");
    TAP_OK(fp != NULL, "golden: reads %s", GOLD_FILE);
    if (fp == NULL) {
        return;
    }
    c.kv = calloc(4096, sizeof(*c.kv));
    while (fgets(line, sizeof(line), fp)) {
        unsigned long long a, b;
        int d;
        size_t m;

        if (sscanf(line, "g %llu %llx", &a, &b) == 2 && a < ngroups) {
            want[a] = b;
            have++;
        } else if (sscanf(line, "n %d %zu", &d, &m) == 2 && d >= 0 &&
                   d < GD_DET_LAST) {
            want_counts[d] = m;
        } else if (sscanf(line, "c %llx %llx", &a, &b) == 2 && c.nkv < 4096) {
            c.kv[c.nkv].key = a;
            c.kv[c.nkv++].val = b;
        }
    }
    fclose(fp);
    qsort(c.kv, c.nkv, sizeof(*c.kv), gold_cmp);

    for (size_t g = 0; g < ngroups; g++) {
        if (got[g] != want[g]) {
            if (bad++ < 10) {
                printf("#   group %zu (texts %zu..%zu) differs\n", g,
                       g * GOLD_GROUP, g * GOLD_GROUP + GOLD_GROUP - 1);
            }
        }
    }
    TAP_OK(have == (int)ngroups && bad == 0,
           "golden: %d generated texts (%zu KiB) give the golden spans "
           "(%zu groups of %d differ)",
           GOLD_TEXTS, bytes / 1024, bad, GOLD_GROUP);
    for (int d = 0; d < GD_DET_LAST; d++) {
        /* every detector matches often in the sample set */
        TAP_OK(counts[d] == want_counts[d] && counts[d] >= 50,
               "golden: %s matches %zu times (golden: %zu)",
               gd_detector_name((gd_detector_e)d), counts[d], want_counts[d]);
    }
    gold_corpus(gold_corpus_one, &c);
    TAP_OK(c.differ == 0 && c.same >= 900,
           "golden: corpus texts: %zu identical, %zu differ, %zu not in the "
           "golden file",
           c.same, c.differ, c.unknown);
    free(c.kv);
}

/* a rough speed figure (not asserted): every detector over a chat body */
static void bench(void)
{
    static const char chunk[] =
        "Hello, I would like to change the delivery address on my order "
        "#A-2023-88812 placed on 2023-11-05. Please ship it to 42 Baker "
        "Street, and call me on +44 20 7946 0958 if needed. Thanks, and "
        "see the logs at /var/log/app/service.log version 1.2.3 ok. ";
    size_t size = 256 * 1024, n = 0;
    char *t = malloc(size);
    gd_detect_span_t sp[8];
    struct timespec a, b;
    double secs;

    for (size_t k = 0; k < size; k++) {
        t[k] = chunk[k % (sizeof(chunk) - 1)];
    }
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int dd = 0; dd < GD_DET_LAST; dd++) {
        n += gd_detect((gd_detector_e)dd, t, size, sp, 8);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    secs = (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    printf("# all %d detectors over %zu KiB: %.1f MB/s (ASan build), "
           "%zu matches\n",
           GD_DET_LAST, size / 1024, size / secs / 1e6, n);
    free(t);
}

int main(void)
{
    test_names();
    test_email();
    test_phone();
    test_card();
    test_iban();
    test_ssn();
    test_ipv4();
    test_ipv6();
    test_private_key();
    test_jwt();
    test_aws();
    test_github();
    test_slack();
    test_secret();
    test_invisible();
    test_random();
    test_adversarial();
    test_golden();
    bench();
    return tap_done();
}
