"""waops_host: the waops host agent (facts, backups, the repair lease, the scheduled check).

Stdlib only, so it runs on any bot host with Debian's python3: installed by the waops_host role as this
package plus the `waops-host` launcher, and streamed zipped over SSH (`facts` on a host without it). It is
the one owner of the backup format, of the facts and health schema (`schema`), of the bounded log read
(`logtail`) and of library version ordering (`versions`); the controller imports those from here.

Exit codes: 0 ok, 1 failed, 2 usage/config error, 75 lock busy.
"""
