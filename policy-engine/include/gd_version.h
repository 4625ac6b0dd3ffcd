/*
 * gd_version: Guard's release version, shared by guardd, guardctl and the
 * packages (the top Makefile reads GUARD_VERSION from this file).  The
 * protocol version is GD_PROTO_VERSION (gd_proto.h).
 */
#ifndef GD_VERSION_H
#define GD_VERSION_H

#define GUARD_VERSION "0.10.0"

#define GD_VERSION_STR_(x) #x
#define GD_VERSION_STR(x) GD_VERSION_STR_(x)

/* what "PROG --version" prints: "guardd 0.10.0 (protocol 1)"; the file
 * using it includes gd_proto.h */
#define GD_VERSION_TEXT(prog)                                                  \
    prog " " GUARD_VERSION " (protocol " GD_VERSION_STR(GD_PROTO_VERSION) ")"

#endif
