# Two Samba Active Directory domain controllers on loopback addresses: the
# on-prem domain `corp` and the AWS Managed Microsoft AD stand-in `aws`. Each
# is provisioned once into $STACK_DIR/samba/NAME with its own smb.conf, runs as
# one foreground `samba` process and answers LDAPS (636) with the stack's
# certificate. Both need port 636, hence one loopback address each.
# shellcheck shell=bash

SAMBA_DOMAINS=(corp aws)

samba_ip()      { case $1 in corp) echo "$CORP_DC_IP" ;; aws) echo "$AWS_DC_IP" ;; esac; }
samba_realm()   { echo "${1^^}.INDUTECH.TEST"; }
samba_base_dn() { echo "DC=$1,DC=indutech,DC=test"; }
samba_bind_dn() { echo "CN=Administrator,CN=Users,$(samba_base_dn "$1")"; }
samba_dir()     { echo "$STACK_DIR/samba/$1"; }
# The delegated OU the directory sync works in: AWS Managed Microsoft AD gives
# its customers OU=<NetBIOS name> under the domain root; on-prem we use our own.
samba_ou()      { case $1 in corp) echo "OU=InduTech,$(samba_base_dn corp)" ;; aws) echo "OU=AWS,$(samba_base_dn aws)" ;; esac; }

# The Administrator password as given to Samba: the stored random secret with a
# prefix that satisfies Samba's complexity rule (upper, lower, digit, symbol)
# and needs no quoting in a shell or an env file.
samba_password() { printf 'Aa1_%s' "$(ensure_secret "${1}_admin_password")"; }

# samba_ldap NAME TOOL ARGS...: run an ldap-utils TOOL as Administrator over
# LDAPS, verified against the stack's CA (the password goes in a pipe, not argv).
samba_ldap() {
    local name=$1 tool=$2; shift 2
    LDAPTLS_CACERT="$CERTS/ca.crt" LDAPTLS_REQCERT=demand "$tool" -x -o nettimeout=5 \
        -H "ldaps://$(samba_ip "$name"):636" -D "$(samba_bind_dn "$name")" \
        -y <(samba_password "$name") "$@"
}

# samba_answers NAME: an authenticated search of the domain root succeeds.
samba_answers() {
    local base out
    base=$(samba_base_dn "$1")
    out=$(samba_ldap "$1" ldapsearch -LLL -o ldif-wrap=no -b "$base" -s base dn 2>/dev/null) || return 1
    [[ ${out,,} == *"dn: ${base,,}"* ]]
}

samba_ensure_ips() {
    local ip sudo=""
    (( EUID == 0 )) || sudo=sudo
    local present
    present=$(ip -4 -o addr show dev lo)  # captured: grep -q in a pipe would SIGPIPE ip under pipefail
    for ip in "$CORP_DC_IP" "$AWS_DC_IP"; do
        if [[ $present != *" inet $ip/"* ]]; then
            log "adding $ip to the loopback interface"
            $sudo ip addr add "$ip/32" dev lo || die "cannot add $ip to lo (needs root or CAP_NET_ADMIN)"
        fi
    done
}

samba_install() {
    local fresh=0
    dpkg-query -W -f='${Status}' samba 2>/dev/null | grep "install ok installed" >/dev/null || fresh=1
    # samba-dsdb-modules, samba-vfs-modules (acl_xattr.so, which provisioning
    # loads) and samba-ad-provision are only Recommends of samba,
    # and apt_ensure installs without recommends: the DC needs all three.
    apt_ensure samba samba-dsdb-modules samba-vfs-modules samba-ad-provision ldap-utils iproute2
    if (( fresh )) && [[ -d /run/systemd/system ]]; then
        # The package starts its own file server; the stack runs only its own processes.
        local sudo=""; (( EUID == 0 )) || sudo=sudo
        $sudo systemctl disable --now smbd nmbd samba-ad-dc >/dev/null 2>&1 || true
    fi
    samba_ensure_ips
    samba_selfcheck
}

# samba_missing_package LOG: the Debian package to install for the failure in a
# samba-tool log, when it is a file that a package we do not pull in ships.
# Samba loads most modules on demand, so a missing Recommends surfaces only as a
# Python traceback deep in provisioning; this turns it into one line.
samba_missing_package() {
    local missing
    missing=$(grep -oE '[A-Za-z0-9_./-]+: cannot open shared object file' "$1" | head -n 1)
    missing=${missing%%:*}
    case ${missing##*/} in
        "") ;;
        acl_xattr.so|xattr_tdb.so|dfs_samba4.so|posixacl.so|streams_xattr.so) echo samba-vfs-modules; return ;;
        samba_dsdb.so|*dsdb*|*ldb*) echo samba-dsdb-modules; return ;;
        *) echo "the package that ships ${missing##*/} (apt-file search ${missing##*/})"; return ;;
    esac
    if grep -qE 'setup/(provision|display-specifiers|ad-schema)|No such file.*/usr/share/samba/setup' "$1"; then
        echo samba-ad-provision
    fi
}

# samba_explain_failure LOG WHAT: die with the missing package named when the log
# shows one, else with the log's last lines (not a pointer to a traceback).
samba_explain_failure() {
    local log_file=$1 what=$2 package
    package=$(samba_missing_package "$log_file")
    if [[ -n $package ]]; then
        die "$what failed: a Samba component is missing; install $package (apt-get install --no-install-recommends $package); log: $log_file"
    fi
    tail -n 5 "$log_file" >&2
    die "$what failed (last lines above); log: $log_file"
}

# samba_selfcheck: provision a throwaway domain once per installed Samba version,
# so that a missing module is named right after the install, before any of our
# domains is made. A fresh machine failed here when samba-vfs-modules (a
# Recommends) was absent; the machines the tests ran on happened to have it.
samba_selfcheck() {
    local version stamp tmp
    version=$(dpkg-query -W -f='${Version}' samba 2>/dev/null) || die "samba is not installed (apt-get install samba)"
    stamp=$STACK_CACHE/samba-selfcheck-$version
    [[ -e $stamp ]] && return 0
    tmp=$(mktemp -d)
    log "checking that Samba $version can provision a domain (a throwaway one, once per version)"
    if samba-tool domain provision --configfile=/dev/null --server-role=dc --dns-backend=NONE \
        --realm=SELFCHECK.INDUTECH.TEST --domain=SELFCHECK --host-name=selfcheck-dc \
        --host-ip="$CORP_DC_IP" --adminpass="Aa1_$(openssl rand -hex 8)" --targetdir="$tmp/dc" \
        >"$LOGS/samba-selfcheck.log" 2>&1; then
        rm -rf "$tmp"; touch "$stamp"; return 0
    fi
    rm -rf "$tmp"
    samba_explain_failure "$LOGS/samba-selfcheck.log" "the Samba self-check (provisioning a throwaway domain)"
}

# samba_write_conf NAME: our own smb.conf (rewritten on every start, so it
# always points at the current certificates); nothing under /etc, /run or
# /var is shared between the two DCs or with a system Samba.
samba_write_conf() {
    local name=$1 dir ip
    dir=$(samba_dir "$name"); ip=$(samba_ip "$name")
    mkdir -p "$dir/etc" "$dir/run" "$dir/tls" "$dir/cache" "$dir/state"
    install -m 600 "$CERTS/server.key" "$dir/tls/key.pem"   # Samba refuses keys others can read
    cat > "$dir/etc/smb.conf.tmp" <<CONF
# Written by deploy/local/components/samba.sh on every start; edits are lost.
[global]
	netbios name = ${name^^}-DC
	workgroup = ${name^^}
	realm = $(samba_realm "$name")
	server role = active directory domain controller
	interfaces = $ip
	bind interfaces only = yes
	# LDAP(S), CLDAP, Kerberos, RPC and the replication housekeeping only: no
	# SMB file server, NetBIOS, WINS, DNS, winbindd or ntp signing.
	server services = -s3fs -nbt -wrepl -dnsupdate -ntp_signd -winbindd -dns
	private dir = $dir/private
	lock directory = $dir
	state directory = $dir/state
	cache directory = $dir/cache
	binddns dir = $dir/bind-dns
	pid directory = $dir/run
	ncalrpc dir = $dir/run/ncalrpc
	winbindd socket directory = $dir/run/winbindd
	ntp signd socket directory = $dir/run/ntp_signd
	usershare path = $dir/state/usershares
	tls enabled = yes
	tls certfile = $CERTS/server.crt
	tls keyfile = $dir/tls/key.pem
	tls cafile = $CERTS/ca.crt

[sysvol]
	path = $dir/state/sysvol
	read only = no

[netlogon]
	path = $dir/state/sysvol/${name}.indutech.test/scripts
	read only = no
CONF
    mv "$dir/etc/smb.conf.tmp" "$dir/etc/smb.conf"
}

# samba_provision NAME: create the domain once; a half-made one is redone.
samba_provision() {
    local name=$1 dir
    dir=$(samba_dir "$name")
    [[ -e $dir/.provisioned ]] && return 0
    rm -rf "$dir"; mkdir -p "$dir"
    # --configfile=/dev/null: nothing from the system's /etc/samba/smb.conf leaks in.
    samba-tool domain provision --configfile=/dev/null --server-role=dc \
        --dns-backend=NONE --realm="$(samba_realm "$name")" --domain="${name^^}" \
        --host-name="$name-dc" --host-ip="$(samba_ip "$name")" \
        --adminpass="$(samba_password "$name")" --targetdir="$dir" \
        --option="interfaces=$(samba_ip "$name")" --option="bind interfaces only=yes" \
        >>"$LOGS/samba-$name-provision.log" 2>&1 || return 1
    touch "$dir/.provisioned"
}

# samba_bootstrap NAME: the OU structure the workers expect, added once.
samba_bootstrap() {
    local name=$1 ou dir
    dir=$(samba_dir "$name"); ou=$(samba_ou "$name")
    [[ -e $dir/.bootstrapped ]] && return 0
    samba_ldap "$name" ldapadd -c >>"$LOGS/samba-$name-provision.log" 2>&1 <<LDIF || true
dn: $ou
objectClass: organizationalUnit
description: InduTech Flows directory sync scope

dn: OU=Users,$ou
objectClass: organizationalUnit

dn: OU=Groups,$ou
objectClass: organizationalUnit
LDIF
    # ldapadd -c exits non-zero on "already exists"; what counts is that all three are there.
    [[ $(samba_ldap "$name" ldapsearch -LLL -b "$ou" -s sub "(objectClass=organizationalUnit)" dn 2>/dev/null \
        | grep -c '^dn: ') -ge 3 ]] || return 1
    touch "$dir/.bootstrapped"
}

# samba_password_policy NAME: the default domain password policy of AWS Managed Microsoft
# AD (complexity on, 7 characters at least, 24 remembered, 1 to 42 days), set on every start
# (idempotent, ~0.4 s): identity-sync creates its users under it, and Windows AD refuses to
# enable an account without a password under such a policy. Samba provisions the same
# values today; this keeps the stand-in faithful if its defaults ever change.
samba_password_policy() {
    local name=$1
    samba-tool domain passwordsettings set -H "$(samba_dir "$name")/private/sam.ldb" \
        --complexity=on --min-pwd-length=7 --history-length=24 --min-pwd-age=1 --max-pwd-age=42 \
        >>"$LOGS/samba-$name-provision.log" 2>&1
}

samba_start() {
    local name pids=() failed=0 i
    ensure_dirs
    samba_ensure_ips
    # Provision both domains side by side (a few seconds each, first start only).
    for name in "${SAMBA_DOMAINS[@]}"; do
        if [[ ! -e $(samba_dir "$name")/.provisioned ]]; then
            log "provisioning Samba AD domain $(samba_realm "$name") in $(samba_dir "$name")"
            samba_provision "$name" & pids+=("$!")
        fi
    done
    for i in "${pids[@]}"; do wait "$i" || failed=1; done
    if (( failed )); then
        for name in "${SAMBA_DOMAINS[@]}"; do
            [[ -e $(samba_dir "$name")/.provisioned ]] \
                || samba_explain_failure "$LOGS/samba-$name-provision.log" "samba-tool domain provision of $name"
        done
    fi

    for name in "${SAMBA_DOMAINS[@]}"; do
        # New certificates since the DC started: restart it so it serves them.
        if pid_alive "samba-$name" && ! cmp -s "$CERTS/server.key" "$(samba_dir "$name")/tls/key.pem"; then
            stop_daemon "samba-$name" 20
        fi
        if ! pid_alive "samba-$name"; then
            samba_write_conf "$name"
            start_daemon "samba-$name" samba -i -M single -s "$(samba_dir "$name")/etc/smb.conf"
        fi
    done
    for name in "${SAMBA_DOMAINS[@]}"; do
        local ip; ip=$(samba_ip "$name")
        # The certificate names the DC by IP and by DNS name; `openssl s_client
        # -verify_hostname` (tls_answers) only matches DNS names, so check that one.
        wait_for 60 "Samba $name (LDAPS on $ip:636)" tls_answers "$ip:636" "$name-dc.$name.indutech.test" \
            || die "Samba $name did not come up: see $LOGS/samba-$name.log"
        wait_for 20 "Samba $name (authenticated search)" samba_answers "$name" \
            || die "Samba $name refuses the Administrator bind: see $LOGS/samba-$name.log"
        samba_bootstrap "$name" || die "could not create $(samba_ou "$name") on Samba $name"
    done
    samba_password_policy aws \
        || die "could not set the password policy of Samba aws: see $LOGS/samba-aws-provision.log"
}

samba_stop() {
    # Samba takes about 2 s to exit on SIGTERM: stop both at once.
    local corp
    stop_daemon samba-corp 20 & corp=$!
    stop_daemon samba-aws 20
    wait "$corp"
}

samba_status() {
    local rc=0 name
    printf 'corp ldaps://%s:636 (%s), aws ldaps://%s:636 (%s)' \
        "$CORP_DC_IP" "$(samba_realm corp)" "$AWS_DC_IP" "$(samba_realm aws)"
    for name in "${SAMBA_DOMAINS[@]}"; do samba_answers "$name" || rc=1; done
    return $rc
}

samba_env() {
    local name prefix
    for name in "${SAMBA_DOMAINS[@]}"; do
        case $name in corp) prefix=INDUTECH_AD_ONPREM ;; aws) prefix=INDUTECH_AD_AWS ;; esac
        cat <<ENV
${prefix}__URL=ldaps://$(samba_ip "$name"):636
${prefix}__BIND_DN=$(samba_bind_dn "$name")
${prefix}__PASSWORD=$(samba_password "$name")
${prefix}__BASE_DN=$(samba_base_dn "$name")
${prefix}__CA_FILE=$CERTS/ca.crt
ENV
    done
}
