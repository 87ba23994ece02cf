/* amberfs verify: placeholder while the command is being written. */
#include "cli.h"

int cmd_verify(int argc, char **argv)
{
	return cli_error("verify: not implemented yet");
}
