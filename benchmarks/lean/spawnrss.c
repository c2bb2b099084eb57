/* spawnrss N PROGRAM [ARGS...]: runs PROGRAM N times in turn (stdin, stdout, stderr: /dev/null) and
 * prints one line per run: wall milliseconds (fork to wait4) and the child's ru_maxrss in KiB, then
 * its exit status. A small C parent because Linux's ru_maxrss of a child includes the high-water mark
 * of the memory it had before exec: a child forked (or vforked by posix_spawn) from a Python driver
 * would report at least the driver's RSS. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc < 3) { fprintf(stderr, "usage: spawnrss N PROGRAM [ARGS...]\n"); return 2; }
  int n = atoi(argv[1]);
  for (int i = 0; i < n; i++) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid == 0) {
      int fd = open("/dev/null", O_RDWR);
      dup2(fd, 0); dup2(fd, 1); dup2(fd, 2);
      execv(argv[2], argv + 2);
      _exit(127);
    }
    int status;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) { perror("spawnrss"); return 2; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("%.3f %ld %d\n", ms, ru.ru_maxrss, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  return 0;
}
