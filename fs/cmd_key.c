/* amberfs key: placeholder while the command is being written. */
#include "cli.h"

int cmd_key(int argc, char **argv)
{
	return cli_error("key: not implemented yet");
}
