#!/bin/sh
# mkdeb.sh OUT VERSION NGINX_SRC: the two Debian packages, from the tree
# that `make install DESTDIR=OUT/root PREFIX=/usr` put into OUT/root (make
# deb runs both): OUT/libnginx-mod-http-guard_VERSION_ARCH.deb, the module
# and its modules-available snippet, and OUT/guard_VERSION_ARCH.deb, the
# rest.  The control files and maintainer scripts are this directory's
# NAME.control (with @VERSION@, @ARCH@, @SIZE@, @DEPENDS@) and NAME.post*,
# NAME.pre*.
set -eu

out=$(cd "$1" && pwd)
version=$2
nginx_src=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$out/root
arch=$(dpkg --print-architecture)
module=usr/lib/nginx/modules/ngx_http_guard_module.so
snippet=usr/share/nginx/modules-available/mod-http-guard.conf

# the nginx ABI the module was built against: the nginx-dev tree's, where
# Debian's dh_nginx reads it, else what the installed nginx provides
abi=$(sed -n 's/^nginx:abi=//p' \
          "$nginx_src/debian/libnginx-mod.abisubstvars" 2>/dev/null || true)
if [ -z "$abi" ]; then
    abi=$(dpkg-query -W -f='${Provides}' nginx 2>/dev/null | tr ',' '\n' |
          sed -n 's/^ *\(nginx-abi-[^ ]*\).*/\1/p' | head -n 1)
fi
if [ -z "$abi" ]; then
    echo "mkdeb: no nginx-abi-* found (install nginx-dev)" >&2
    exit 1
fi

# shlibs FILE...: the Depends for the shared libraries the files use, by
# dpkg-shlibdeps (dpkg-dev), else the packages holding them, unversioned
shlibs() {
    if command -v dpkg-shlibdeps >/dev/null; then
        tmp=$(mktemp -d)
        mkdir "$tmp/debian"
        printf 'Source: guard\n\nPackage: guard\nArchitecture: any\n' \
            > "$tmp/debian/control"
        (cd "$tmp" && dpkg-shlibdeps -O "$@" 2>/dev/null) |
            sed -n 's/^shlibs:Depends=//p'
        rm -rf "$tmp"
        return
    fi
    for lib in $(ldd "$@" | awk '$3 ~ /^\// { print $3 }' | sort -u); do
        dpkg -S "$lib" 2>/dev/null || dpkg -S "$(realpath "$lib")" 2>/dev/null
    done | cut -d: -f1 | sort -u | paste -sd, | sed 's/,/, /g'
}

# package NAME DEPENDS: OUT/NAME (already holding its files) into a .deb;
# every file under etc/ is a conffile
package() {
    name=$1
    dir=$out/$name
    mkdir -p "$dir/DEBIAN"
    size=$(du -sk --exclude=DEBIAN "$dir" | cut -f1)
    sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" \
        -e "s|@SIZE@|$size|" -e "s|@DEPENDS@|$2|" \
        "$here/$name.control" > "$dir/DEBIAN/control"
    for s in preinst postinst prerm postrm; do
        if [ -f "$here/$name.$s" ]; then
            install -m 0755 "$here/$name.$s" "$dir/DEBIAN/$s"
        fi
    done
    (cd "$dir" && find etc -type f 2>/dev/null | sort | sed 's|^|/|') \
        > "$dir/DEBIAN/conffiles"
    [ -s "$dir/DEBIAN/conffiles" ] || rm "$dir/DEBIAN/conffiles"
    (cd "$dir" && find . -path ./DEBIAN -prune -o -path ./etc -prune \
         -o -type f -printf '%P\n' | sort | xargs -r md5sum) \
        > "$dir/DEBIAN/md5sums"
    dpkg-deb --root-owner-group -Zgzip --build "$dir" \
        "$out/${name}_${version}_${arch}.deb" >/dev/null
    echo "mkdeb: $out/${name}_${version}_${arch}.deb"
}

# the module's package: the module and the snippet; the rest is guard's
mod=$out/libnginx-mod-http-guard
gd=$out/guard
rm -rf "$mod" "$gd" "$out"/*.deb
mkdir -p "$mod/$(dirname $module)" "$mod/$(dirname $snippet)" "$gd"
cp -a "$root/." "$gd/"
mv "$gd/$module" "$mod/$module"
mv "$gd/$snippet" "$mod/$snippet"
rmdir -p --ignore-fail-on-non-empty "$gd/$(dirname $module)" \
    "$gd/$(dirname $snippet)"

package libnginx-mod-http-guard "$abi, $(shlibs "$mod/$module")"
package guard "$(shlibs "$gd/usr/sbin/guardd" "$gd/usr/bin/guardctl")"
