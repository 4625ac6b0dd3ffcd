# nginx addon script, sourced by configure after it wrote objs/Makefile:
# the rule that builds policy-engine's library for this tree (see config).
# The prerequisites are GNU make wildcards, evaluated when make runs, so
# that a file added to policy-engine/src or include joins without
# configuring again.

if [ "$ngx_guard_lib_rule" = yes ]; then

    if [ "$ngx_guard_link" = DYNAMIC ]; then
        ngx_guard_target=$NGX_OBJS/ngx_http_guard_module$ngx_modext
    else
        ngx_guard_target=$NGX_OBJS/nginx$ngx_binext
    fi

    cat << END                                                >> $NGX_MAKEFILE

$ngx_guard_lib:	\$(wildcard $ngx_addon_dir/policy-engine/src/gd_*.c) \\
	\$(wildcard $ngx_addon_dir/policy-engine/include/*.h) \\
	\$(wildcard $ngx_addon_dir/policy-engine/include/*.def) \\
	$ngx_addon_dir/policy-engine/Makefile
	\$(MAKE) -C $ngx_addon_dir/policy-engine module-lib \\
		MODULE_LIB_DIR="\$(CURDIR)/$NGX_OBJS/addon/policy-engine" \\
		MODULE_CC="\$(CC)" MODULE_CFLAGS="\$(CFLAGS)"

$ngx_guard_target:	$ngx_guard_lib

END

fi
