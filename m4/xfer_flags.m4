# XFER_CHECK_CFLAGS(VAR, FLAGS)
# Append to VAR each flag of FLAGS that the C compiler accepts without a
# warning (a probe compiled with -Werror, so unknown -W options are caught).
AC_DEFUN([XFER_CHECK_CFLAGS], [
  for xfer_flag in $2; do
    AC_MSG_CHECKING([whether $CC accepts $xfer_flag])
    xfer_save_CFLAGS=$CFLAGS
    CFLAGS="$CFLAGS -Werror $xfer_flag"
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[]], [[return 0;]])],
      [AC_MSG_RESULT([yes]); $1="$$1 $xfer_flag"],
      [AC_MSG_RESULT([no])])
    CFLAGS=$xfer_save_CFLAGS
  done
])

# XFER_CHECK_PTHREAD
# POSIX threads on glibc: -pthread for compiling and linking.
AC_DEFUN([XFER_CHECK_PTHREAD], [
  AC_MSG_CHECKING([for -pthread])
  xfer_save_CFLAGS=$CFLAGS
  CFLAGS="$CFLAGS -pthread"
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <pthread.h>]],
                                  [[pthread_t t; return pthread_create(&t, 0, 0, 0);]])],
    [AC_MSG_RESULT([yes]); PTHREAD_CFLAGS=-pthread; PTHREAD_LIBS=-pthread],
    [AC_MSG_ERROR([POSIX threads (-pthread) are required])])
  CFLAGS=$xfer_save_CFLAGS
  AC_SUBST([PTHREAD_CFLAGS])
  AC_SUBST([PTHREAD_LIBS])
])
