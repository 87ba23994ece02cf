/* amberfs push: placeholder while the command is being written. */
#include "cli.h"

int cmd_push(int argc, char **argv)
{
	return cli_error("push: not implemented yet");
}
